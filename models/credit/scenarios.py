"""Demo traffic that behaves like the world: requests over weeks, shifts, and later truth.

German credit applicants are replayed as requests over weeks, optionally shifted from a given
week on, and the ground truth that arrives later is written as a separate file.

Scenarios (combine with commas; each starts at ``shift_week``, 0-based):

- ``none``: applicants drawn with replacement from the data set, as they are.
- ``young_no_history_surge``: 40 % of requests come from applicants under 25 with no
  credit history (drawn from the under-25 applicants, credit_history set to A30 "no credits
  taken"); their outcomes are kept.
- ``amounts_inflate``: every credit amount is 30 % higher (prices rose; outcomes kept).
- ``slice_outcomes_worsen``: half of the good outcomes of female divorced/separated/married
  applicants (personal_status_sex A92) turn bad (the model is not told).

Ground truth: one row per request with prediction_id = request_id, label 1 good / 0 bad and
label_time = event time + ``label_delay_days`` (+ up to 2 days); a few labels are first
reported wrong and corrected a day later (duplicates: the last label_time wins), and a few
never arrive.

Usage::

    python -m models.credit.scenarios --scenario amounts_inflate,slice_outcomes_worsen \\
        --requests out/requests.jsonl --truth out/truth.jsonl
"""

import argparse
import datetime

import numpy as np

from models.credit.data import load_german
from models.credit.replay import write_jsonl

SCENARIOS = ("none", "young_no_history_surge", "amounts_inflate", "slice_outcomes_worsen")
SURGE_SHARE = 0.4
INFLATION = 1.3
WORSEN_CODES = ("A92",)
WORSEN_SHARE = 0.5


def parse_scenarios(text: str) -> tuple[str, ...]:
    """Comma-separated scenario names, checked.

    Raises:
        ValueError: an unknown name.
    """
    names = tuple(n.strip() for n in text.split(",") if n.strip()) or ("none",)
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        raise ValueError(f"unknown scenario(s) {unknown}; choose from {', '.join(SCENARIOS)}")
    return tuple(n for n in names if n != "none")


def _client_value(value):
    return int(value) if isinstance(value, float) and value.is_integer() else value


def generate(records: list[dict], labels, scenarios: tuple[str, ...], weeks: int = 6,
             per_week: int = 500, start: datetime.datetime | None = None, shift_week: int = 3,
             seed: int = 7, label_delay_days: float = 30.0, missing_share: float = 0.03,
             corrected_share: float = 0.02, id_prefix: str = "app"):
    """Requests and their later ground truth.

    Args:
        records: applicant fields (``load_german``).
        labels: 1 good / 0 bad per record.
        scenarios: shifts to apply from ``shift_week`` on (empty = none).
        weeks, per_week: how many weeks of traffic, requests per week.
        start: event time of week 0's start (default Monday 2026-09-07 UTC).
        shift_week: first shifted week.
        seed: everything random derives from it.
        label_delay_days: how long outcomes take to be known.
        missing_share: share of outcomes that never arrive.
        corrected_share: share of outcomes first reported wrong, corrected a day later.
        id_prefix: start of request ids.

    Returns:
        (requests, truth): lists of dicts, requests in event-time order.
    """
    rng = np.random.default_rng(seed)
    start = start or datetime.datetime(2026, 9, 7, tzinfo=datetime.UTC)
    labels = np.asarray(labels)
    young = [i for i, r in enumerate(records) if r["age_years"] < 25]
    requests, truth = [], []
    for week in range(weeks):
        offsets = np.sort(rng.uniform(0, 7 * 86400, per_week))
        shifted = week >= shift_week
        for n, offset in enumerate(offsets):
            index = int(rng.integers(len(records)))
            fields = dict(records[index])
            label = int(labels[index])
            if shifted and "young_no_history_surge" in scenarios and rng.random() < SURGE_SHARE:
                index = young[int(rng.integers(len(young)))]
                fields = dict(records[index], credit_history="A30")
                label = int(labels[index])
            if shifted and "amounts_inflate" in scenarios:
                fields["credit_amount"] = round(fields["credit_amount"] * INFLATION)
            if (shifted and "slice_outcomes_worsen" in scenarios and label == 1
                    and fields["personal_status_sex"] in WORSEN_CODES
                    and rng.random() < WORSEN_SHARE):
                label = 0
            event_time = start + datetime.timedelta(seconds=float(offset), weeks=week)
            request_id = f"{id_prefix}-w{week:02d}-{n:05d}"
            requests.append({"request_id": request_id, "event_time": event_time.isoformat(),
                             **{k: _client_value(v) for k, v in fields.items()}})
            if rng.random() < missing_share:
                continue
            label_time = event_time + datetime.timedelta(
                days=label_delay_days + float(rng.uniform(0, 2)))
            if rng.random() < corrected_share:
                truth.append({"prediction_id": request_id, "label": 1 - label,
                              "label_time": label_time.isoformat()})
                label_time += datetime.timedelta(days=1)
            truth.append({"prediction_id": request_id, "label": label,
                          "label_time": label_time.isoformat()})
    truth.sort(key=lambda t: t["label_time"])
    return requests, truth


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="../shared/data/credit/german.data")
    parser.add_argument("--scenario", default="none",
                        help=f"comma-separated, from: {', '.join(SCENARIOS)}")
    parser.add_argument("--requests", required=True, help="JSON Lines file of requests to write")
    parser.add_argument("--truth", required=True, help="JSON Lines file of ground truth to write")
    parser.add_argument("--weeks", type=int, default=6)
    parser.add_argument("--per_week", type=int, default=500)
    parser.add_argument("--start", default="2026-09-07T00:00:00+00:00")
    parser.add_argument("--shift_week", type=int, default=3)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--id_prefix", default="app")
    args = parser.parse_args(argv)
    records, labels = load_german(args.data)
    requests, truth = generate(
        records, labels, parse_scenarios(args.scenario), args.weeks, args.per_week,
        datetime.datetime.fromisoformat(args.start), args.shift_week, args.seed,
        id_prefix=args.id_prefix)
    write_jsonl(requests, args.requests)
    write_jsonl(truth, args.truth)
    print(f"wrote {len(requests)} requests to {args.requests} and {len(truth)} truth rows "
          f"to {args.truth} (scenario {args.scenario}, shifted from week {args.shift_week})")


if __name__ == "__main__":
    main()
