"""Demo traffic that behaves like the world: requests over weeks, shifts, and later truth.

A configured data set's applicants are replayed as requests over weeks, optionally shifted from
a given week on, and the ground truth that arrives later is written as a separate file. The
shifts are configuration (``<config>/scenarios/<model name>.json``), in three kinds:

- ``surge``: a ``share`` of requests is drawn from a sub-population (``from``: a field with
  ``codes``, or a ``min`` / ``max`` band), optionally with fields ``set`` to given values;
  their outcomes are kept;
- ``scale``: a numeric ``field`` is multiplied by ``factor`` (outcomes kept);
- ``worsen_outcomes``: a ``share`` of the good outcomes of a ``group`` (field + codes or band)
  turn bad; the model is not told.
``none`` replays applicants drawn with replacement, as they are.

Ground truth: one row per request with prediction_id = request_id, label 1 good / 0 bad and
label_time = event time + ``label_delay_days`` (+ up to 2 days); a few labels are first
reported wrong and corrected a day later (duplicates: the last label_time wins), and a few
never arrive.

Usage::

    python -m models.credit.scenarios --config credit_german \\
        --scenario amounts_inflate,slice_outcomes_worsen \\
        --requests out/requests.jsonl --truth out/truth.jsonl
"""

import argparse
import datetime
import math
import os
import sys

import numpy as np

from models.config import ConfigError, default_path, read_config
from models.credit.dataset import (
    NUMERIC,
    DataError,
    Dataset,
    add_dataset_arguments,
    load_dataset,
    read_data,
    resolve_data_path,
)
from models.credit.replay import client_value, write_jsonl
from models.exit_codes import run_command

KINDS = ("surge", "scale", "worsen_outcomes")


def _check_condition(name: str, condition, dataset: Dataset, path: str) -> None:
    if not isinstance(condition, dict) or condition.get("field") not in dataset.by_name:
        raise ConfigError(f"{path}: scenario {name!r} needs a field of the data set, got "
                          f"{condition!r}")
    if "codes" not in condition and "min" not in condition and "max" not in condition:
        raise ConfigError(f"{path}: scenario {name!r}: a condition needs codes or a min/max")


def load_scenarios(path: str, dataset: Dataset) -> dict:
    """The scenarios of a configuration file, checked against the data set.

    Returns:
        {scenario name: spec} in the file's order.
    """
    scenarios = read_config("scenarios", path).content.get("scenarios", {})
    for name, spec in scenarios.items():
        kind = spec.get("kind")
        if kind not in KINDS:
            raise ConfigError(f"{path}: scenario {name!r} has kind {kind!r}; kinds: "
                              f"{', '.join(KINDS)}")
        if kind == "surge":
            _check_condition(name, spec.get("from"), dataset, path)
            unknown = sorted(set(spec.get("set", {})) - set(dataset.field_names))
            if unknown:
                raise ConfigError(f"{path}: scenario {name!r} sets unknown fields {unknown}")
        elif kind == "scale":
            field = dataset.by_name.get(spec.get("field"))
            if field is None or field.kind != NUMERIC:
                raise ConfigError(f"{path}: scenario {name!r} scales {spec.get('field')!r}, "
                                  f"which is not a numeric field of the data set")
        else:
            _check_condition(name, spec.get("group"), dataset, path)
        if not 0.0 <= float(spec.get("share", 0.0)) <= 1.0:
            raise ConfigError(f"{path}: scenario {name!r}: share must lie in [0, 1]")
    return scenarios


def parse_scenarios(text: str, available: dict) -> tuple[str, ...]:
    """Comma-separated scenario names, checked against the configured ones.

    Raises:
        ValueError: an unknown name.
    """
    names = tuple(n.strip() for n in text.split(",") if n.strip()) or ("none",)
    unknown = [n for n in names if n != "none" and n not in available]
    if unknown:
        raise ValueError(f"unknown scenario(s) {unknown}; choose from "
                         f"{', '.join(('none', *available))}")
    return tuple(n for n in names if n != "none")


def matches(condition: dict, record: dict) -> bool:
    """Whether a record falls in a condition: its field's code in ``codes``, or its number in
    [``min``, ``max``)."""
    value = record.get(condition["field"])
    if value is None:
        return False
    if "codes" in condition:
        return str(value) in condition["codes"]
    return condition.get("min", -math.inf) <= float(value) < condition.get("max", math.inf)


def generate(records: list[dict], labels, scenarios: dict, active: tuple[str, ...] = (),
             weeks: int = 6, per_week: int = 500, start: datetime.datetime | None = None,
             shift_week: int = 3, seed: int = 7, label_delay_days: float = 30.0,
             missing_share: float = 0.03, corrected_share: float = 0.02,
             id_prefix: str = "app"):
    """Requests and their later ground truth.

    Args:
        records: applicant fields (``read_data``).
        labels: 1 good / 0 bad per record.
        scenarios: the configured scenarios ({name: spec}, applied in this order).
        active: names of the scenarios to apply from ``shift_week`` on (empty = none).
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
    applied = [(name, spec) for name, spec in scenarios.items() if name in active]
    pools = {name: [i for i, r in enumerate(records) if matches(spec["from"], r)]
             for name, spec in applied if spec["kind"] == "surge"}
    requests, truth = [], []
    for week in range(weeks):
        offsets = np.sort(rng.uniform(0, 7 * 86400, per_week))
        shifted = week >= shift_week
        for n, offset in enumerate(offsets):
            index = int(rng.integers(len(records)))
            fields, label = dict(records[index]), int(labels[index])
            for name, spec in applied if shifted else ():
                if spec["kind"] == "surge" and pools[name] and rng.random() < spec["share"]:
                    index = pools[name][int(rng.integers(len(pools[name])))]
                    fields, label = dict(records[index], **spec.get("set", {})), int(
                        labels[index])
                elif spec["kind"] == "scale" and fields[spec["field"]] is not None:
                    fields[spec["field"]] = round(fields[spec["field"]] * spec["factor"])
                elif (spec["kind"] == "worsen_outcomes" and label == 1
                      and matches(spec["group"], fields) and rng.random() < spec["share"]):
                    label = 0
            event_time = start + datetime.timedelta(seconds=float(offset), weeks=week)
            request_id = f"{id_prefix}-w{week:02d}-{n:05d}"
            requests.append({"request_id": request_id, "event_time": event_time.isoformat(),
                             **{k: client_value(v) for k, v in fields.items()}})
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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_dataset_arguments(parser)
    parser.add_argument("--scenarios", default=None,
                        help="scenario file (default: <config>/scenarios/<model name>.json)")
    parser.add_argument("--scenario", default="none",
                        help="comma-separated names from the scenario file, or none")
    parser.add_argument("--requests", required=True, help="JSON Lines file of requests to write")
    parser.add_argument("--truth", required=True, help="JSON Lines file of ground truth to write")
    parser.add_argument("--weeks", type=int, default=6)
    parser.add_argument("--per_week", type=int, default=500)
    parser.add_argument("--start", default="2026-09-07T00:00:00+00:00")
    parser.add_argument("--shift_week", type=int, default=3)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--id_prefix", default="app")
    parser.add_argument("--holdout_only", action="store_true",
                        help="draw applicants only from the hold-out split training uses "
                             "(seed 42, 20 %%), so the model never saw them")
    args = parser.parse_args(argv)
    try:
        dataset = load_dataset(args.config)
        path = args.scenarios or default_path("scenarios", dataset.model_name)
        scenarios = load_scenarios(path, dataset) if args.scenarios or os.path.exists(path) \
            else {}
        active = parse_scenarios(args.scenario, scenarios)
        loaded = read_data(dataset, resolve_data_path(dataset, args.data))
    except (ConfigError, DataError, ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    records, labels = loaded.records, loaded.labels
    if args.holdout_only:
        from models.credit.train import stratified_split

        _, holdout = stratified_split(labels, 0.2, 42)
        records, labels = [records[i] for i in holdout], labels[holdout]
    requests, truth = generate(
        records, labels, scenarios, active, args.weeks, args.per_week,
        datetime.datetime.fromisoformat(args.start), args.shift_week, args.seed,
        id_prefix=args.id_prefix)
    write_jsonl(requests, args.requests)
    write_jsonl(truth, args.truth)
    print(f"wrote {len(requests)} {dataset.model_name} requests to {args.requests} and "
          f"{len(truth)} truth rows to {args.truth} (scenario {args.scenario}, shifted from "
          f"week {args.shift_week})")
    return 0


if __name__ == "__main__":
    sys.exit(run_command(main))
