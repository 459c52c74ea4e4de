"""Challenger against champion: both versions score the newest labelled window the challenger
was not trained on, and promotion rules decide on paired differences with bootstrap intervals.

The window is the training snapshots' rows from the challenger's ``training_window.until`` on
(a time-based hold-out); a challenger trained without ``--until`` has no such window and is
refused. Both versions score the same rows, so differences are paired; their percentile
bootstrap interval (resampling rows) is what the rules judge. The decision record, with every
figure side by side, goes to ``<registry>/<model>/promotions/``; with ``--promote`` an accepted
challenger takes the alias (``models.promotion``, smoke checks included).

Usage::

    python -m models.credit.compare --registry registry --model credit_german \\
        --challenger v0002 [--champion production] [--snapshot ID ...] [--promote]

Exit status: 0 accepted, 4 refused (the reasons are printed and recorded), 2 on errors.
"""

import argparse
import dataclasses
import datetime
import json
import sys

import numpy as np
from apache_beam.io.filesystems import FileSystems

from models import registry as model_registry
from models.config import (
    EVALUATION_DEFAULTS,
    ConfigError,
    default_path,
    load_evaluation_config,
    read_config,
)
from models.credit.dataset import Dataset, dataset_from_manifest
from models.credit.snapshots import SnapshotError, list_snapshots, read_snapshot
from models.exit_codes import PROMOTION_REFUSED, run_command
from models.files import write_file
from models.metrics import expected_cost, log_loss, roc_auc
from models.promotion import promote
from models.registry import PRODUCTION, RegistryError
from models.slices import fairness_gaps, group_members

PROMOTIONS = "promotions"


class CompareError(ValueError):
    """A comparison that cannot be made fairly (no hold-out window, too few labels...)."""


def figures(labels: np.ndarray, scores: np.ndarray, dataset: Dataset) -> dict:
    """AUC, log loss, approval rate and (with costs) expected cost at the data set's
    threshold."""
    approved = scores >= dataset.decision_threshold
    both = 0 < labels.sum() < len(labels)
    costs = dataset.costs
    return {"auc": roc_auc(labels, scores) if both else float("nan"),
            "log_loss": log_loss(labels, scores),
            "approval_rate": float(approved.mean()),
            "expected_cost": (expected_cost(labels, approved, costs["bad_approved"],
                                            costs["good_declined"]) if costs else None)}


def paired_bootstrap(labels, champion, challenger, dataset: Dataset, samples: int,
                     confidence: float, seed: int = 0) -> dict:
    """Percentile intervals of challenger - champion for AUC and expected cost, resampling
    the same rows for both."""
    rng = np.random.default_rng(seed)
    n = len(labels)
    diffs = {"auc": [], "expected_cost": []}
    for _ in range(samples):
        pick = rng.integers(0, n, n)
        a = figures(labels[pick], champion[pick], dataset)
        b = figures(labels[pick], challenger[pick], dataset)
        diffs["auc"].append(b["auc"] - a["auc"])
        if dataset.costs:
            diffs["expected_cost"].append(b["expected_cost"] - a["expected_cost"])
    tail = (1 - confidence) / 2 * 100
    return {name: ([float(np.nanpercentile(values, tail)),
                    float(np.nanpercentile(values, 100 - tail))] if values else None)
            for name, values in diffs.items()}


def slice_gaps(records, labels, scores, dataset: Dataset, evaluation: dict) -> dict:
    """Per configured slice group (not small): its gaps against the rest."""
    approved = scores >= dataset.decision_threshold
    out = {}
    for dimension in evaluation["slices"]:
        for group, member in group_members(dimension, records):
            gaps = fairness_gaps(labels, approved, member, evaluation["min_slice_size"],
                                 evaluation["min_class_count"])
            if not gaps["small"]:
                out[f"{dimension['name']}={group}"] = {
                    k: gaps[k] for k in ("size", "approval_rate_diff", "tpr_diff")}
    return out


def window_start(challenger_manifest: dict) -> datetime.datetime:
    """Where the challenger's held-out window starts: its training ``until``.

    Raises:
        CompareError: it was trained without ``--until`` (no window is held out from it).
    """
    until = (challenger_manifest.get("training_window") or {}).get("until")
    if not until:
        raise CompareError(
            f"{challenger_manifest['version']} was trained without --until, so no labelled "
            f"window is held out from it: retrain with --until DATE to compare fairly")
    start = datetime.datetime.fromisoformat(until)
    return start if start.tzinfo else start.replace(tzinfo=datetime.UTC)


def newest_labels(rows) -> list[dict]:
    """One row per prediction id (the newest label_time), sorted by id."""
    newest = {}
    for row in rows:
        known = newest.get(row["prediction_id"])
        if known is None or row["label_time"] > known["label_time"]:
            newest[row["prediction_id"]] = row
    return sorted(newest.values(), key=lambda r: r["prediction_id"])


def window_rows(registry: str, dataset: Dataset, challenger_manifest: dict,
                snapshot_ids) -> list[dict]:
    """The labelled rows from the challenger's training ``until`` on (newest label per id)."""
    start = window_start(challenger_manifest)
    ids = list(snapshot_ids) or list_snapshots(registry, dataset.model_name)
    return newest_labels(row for snapshot_id in ids for row in read_snapshot(
        registry, dataset.model_name, snapshot_id, dataset, since=start)[0])


@dataclasses.dataclass(frozen=True)
class Comparison:
    """What a comparison needs besides the scores: both versions, the data set, the rules.

    Attributes:
        registry, model_name: where the versions live.
        champion_alias: how the champion was named (an alias or a version).
        champion, challenger: the resolved versions.
        dataset: the challenger's data set (the champion's has the same schema).
        evaluation: slices (and their minimum sizes) for the gap rule.
        rules: the promotion rules' content; rules_version: its recorded version.
        snapshot_ids: the snapshots holding the window's labels.
    """

    registry: str
    model_name: str
    champion_alias: str
    champion: model_registry.ModelRef
    challenger: model_registry.ModelRef
    dataset: Dataset
    evaluation: dict
    rules: dict
    rules_version: str
    snapshot_ids: tuple[str, ...]


def prepare(registry: str, model_name: str, challenger: str, champion: str = PRODUCTION,
            snapshot_ids=(), rules_path: str | None = None,
            evaluation_path: str | None = None, live: bool = False) -> Comparison:
    """Resolve and check everything a comparison needs, before anything is scored.

    ``live``: the evidence is the live requests the challenger scored as the shadow (their
    sampled rows and late labels), which it never trained on: no held-out window is needed.

    Raises:
        CompareError: the challenger is the champion, has another schema, or has no hold-out
            window.
        RegistryError, ConfigError: what is named is missing or broken.
    """
    rules = read_config("promotion", rules_path or default_path("promotion", model_name))
    champ = model_registry.resolve(registry, model_name, champion)
    chall = model_registry.resolve(registry, model_name, challenger)
    if champ.version == chall.version:
        raise CompareError(f"the challenger {chall.version} is the champion ({champion})")
    dataset = dataset_from_manifest(chall.manifest)
    if dataset_from_manifest(champ.manifest).kinds != dataset.kinds:
        raise CompareError(f"{champ.version} and {chall.version} were trained on different "
                           f"schemas; compare them by evaluation, not on one window")
    if not live:
        window_start(chall.manifest)
    try:
        evaluation = load_evaluation_config(
            evaluation_path or default_path("evaluation", model_name), dataset.kinds)
    except ConfigError:
        evaluation = dict(EVALUATION_DEFAULTS)
    return Comparison(registry=registry, model_name=model_name, champion_alias=champion,
                      champion=champ, challenger=chall, dataset=dataset, evaluation=evaluation,
                      rules=rules.content, rules_version=rules.version,
                      snapshot_ids=tuple(snapshot_ids) or tuple(list_snapshots(
                          registry, model_name)))


def decide(comparison: Comparison, rows: list[dict], champion_scores, challenger_scores,
           live: str | None = None) -> dict:
    """The promotion decision record from the window's rows and both versions' scores on them
    (same order). Pure apart from the challenger's smoke checks.

    ``live`` names the evidence when the rows are live requests the challenger scored as the
    shadow (instead of the held-out window of the training snapshots)."""
    from models.promotion import smoke_problems

    c, dataset, content = comparison, comparison.dataset, comparison.rules
    champ, chall = c.champion, c.challenger
    labels = np.asarray([r["label"] for r in rows], dtype=np.int64)
    records = [{f: r[f] for f in dataset.field_names} for r in rows]
    scores = {champ.version: np.asarray(champion_scores, dtype=float),
              chall.version: np.asarray(challenger_scores, dtype=float)}
    checks, reasons = [], []

    def check(name, passed, evidence):
        checks.append({"rule": name, "passed": bool(passed), "evidence": evidence})
        if not passed:
            reasons.append(f"{name}: {evidence}")

    until = None if live else chall.manifest["training_window"]["until"]
    where = live or f"in the window from {until}"
    enough = len(rows) >= content.get("min_labels", 0) and 0 < labels.sum() < len(labels)
    check("min_labels", enough, f"{len(rows)} labelled rows {where} "
                                f"(need {content.get('min_labels', 0)}, both outcomes)")
    record = {
        "decided_at": datetime.datetime.now(datetime.UTC).isoformat(),
        "model_name": c.model_name, "rules_version": c.rules_version,
        "champion": {"alias": c.champion_alias, "version": champ.version,
                     "sha256": champ.sha256},
        "challenger": {"version": chall.version, "sha256": chall.sha256},
        "window": ({"evidence": live, "rows": len(rows)} if live else
                   {"from": until, "rows": len(rows), "snapshots": list(c.snapshot_ids)}),
    }
    if enough:
        a, b = (figures(labels, scores[v], dataset) for v in (champ.version, chall.version))
        intervals = paired_bootstrap(labels, scores[champ.version], scores[chall.version],
                                     dataset, content.get("bootstrap_samples", 1000),
                                     content.get("confidence", 0.95))
        record["figures"] = {"champion": a, "challenger": b,
                             "difference": {k: (None if a[k] is None else b[k] - a[k])
                                            for k in a},
                             "interval": intervals}
        check("auc_difference", intervals["auc"][0] >= content["auc_diff_lower_bound_min"],
              f"AUC {b['auc']:.3f} vs {a['auc']:.3f}, difference interval "
              f"[{intervals['auc'][0]:+.3f}, {intervals['auc'][1]:+.3f}] (lower bound must be "
              f">= {content['auc_diff_lower_bound_min']:+.3f})")
        if dataset.costs:
            increase = b["expected_cost"] - a["expected_cost"]
            check("expected_cost", increase <= content.get("max_expected_cost_increase", 0.0),
                  f"expected cost {b['expected_cost']:.3f} vs {a['expected_cost']:.3f} per "
                  f"applicant (increase {increase:+.3f}, allowed "
                  f"{content.get('max_expected_cost_increase', 0.0):+.3f})")
        gaps_a = slice_gaps(records, labels, scores[champ.version], dataset, c.evaluation)
        gaps_b = slice_gaps(records, labels, scores[chall.version], dataset, c.evaluation)
        widened = []
        for group in sorted(set(gaps_a) & set(gaps_b)):
            for gap in content.get("gaps", ["approval_rate_diff"]):
                before, after = gaps_a[group][gap], gaps_b[group][gap]
                if np.isfinite(before) and np.isfinite(after) and \
                        abs(after) - abs(before) > content.get("max_gap_widening", 0.1):
                    widened.append(f"{group} {gap} {before:+.3f} -> {after:+.3f}")
        record["slice_gaps"] = {"champion": gaps_a, "challenger": gaps_b}
        check("slice_gaps", not widened, "; ".join(widened) or
              f"no gap widened by more than {content.get('max_gap_widening', 0.1)}")
    problems = smoke_problems(chall)
    check("smoke", not problems, "; ".join(problems) or "loads and reproduces its smoke scores")
    record.update(accepted=not reasons, reasons=reasons, checks=checks)
    return record


def compare(registry: str, model_name: str, challenger: str, champion: str = PRODUCTION,
            snapshot_ids=(), rules_path: str | None = None,
            evaluation_path: str | None = None) -> dict:
    """The promotion decision record of ``challenger`` against ``champion``, scored in this
    process (``pipelines.compare`` scores a large window in Beam instead).

    Raises:
        CompareError: see ``prepare``. RegistryError, SnapshotError, ConfigError: what is
            named is missing or broken.
    """
    import keras

    from models.credit.model import predict_scores

    comparison = prepare(registry, model_name, challenger, champion, snapshot_ids, rules_path,
                         evaluation_path)
    rows = window_rows(registry, comparison.dataset, comparison.challenger.manifest,
                       comparison.snapshot_ids)
    records = [{f: r[f] for f in comparison.dataset.field_names} for r in rows]
    scores = []
    for ref in (comparison.champion, comparison.challenger):
        model = keras.models.load_model(ref.path, compile=False)
        scores.append(predict_scores(model, records, comparison.dataset.kinds)
                      if records else np.zeros(0))
    return decide(comparison, rows, *scores)


def write_record(registry: str, record: dict) -> str:
    """Write the decision record under ``<registry>/<model>/promotions/``; returns its path."""
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    path = FileSystems.join(registry, record["model_name"], PROMOTIONS,
                            f"{stamp}-{record['challenger']['version']}-vs-"
                            f"{record['champion']['version']}.json")
    return write_file(path, json.dumps(record, indent=2, default=str).encode("utf-8"))


def describe(record: dict) -> str:
    """The comparison as a person reads it: figures side by side, then the verdict."""
    champ, chall = record["champion"], record["challenger"]
    lines = [f"{record['model_name']}: challenger {chall['version']} vs champion "
             f"{champ['version']} ({champ['alias']}) on {record['window']['rows']} labelled "
             + (f"{record['window']['evidence']}" if "evidence" in record["window"] else
                f"rows from {record['window']['from']}")]
    if "figures" in record:
        f = record["figures"]
        lines.append(f"  {'':15}{'champion':>10}{'challenger':>12}{'difference':>12}  interval")
        for name in ("auc", "log_loss", "approval_rate", "expected_cost"):
            a, b, d = f["champion"][name], f["challenger"][name], f["difference"][name]
            if a is None:
                continue
            interval = f["interval"].get(name)
            lines.append(f"  {name:15}{a:>10.3f}{b:>12.3f}{d:>+12.3f}  "
                         + (f"[{interval[0]:+.3f}, {interval[1]:+.3f}]" if interval else ""))
    lines.append("  => " + ("ACCEPTED" if record["accepted"] else
                            "REFUSED: " + "; ".join(record["reasons"])))
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--registry", default="registry")
    # The Beam job's spellings (pipelines.compare) are accepted too: one command, two engines.
    parser.add_argument("--model", "--model_name", dest="model", default="credit_german",
                        help="model name")
    parser.add_argument("--challenger", required=True, help="the new version, e.g. v0002")
    parser.add_argument("--champion", default=PRODUCTION,
                        help="the version in service: an alias or a version")
    parser.add_argument("--snapshot", action="append", default=[],
                        help="snapshots holding the window's labels (default: all); repeat it")
    parser.add_argument("--snapshots", default=None,
                        help="the same, comma-separated")
    parser.add_argument("--rules", "--promotion_rules", dest="rules", default=None,
                        help="promotion rules (default <config>/promotion/<model>.json)")
    parser.add_argument("--promote", action="store_true",
                        help="move the champion's alias to an accepted challenger")
    parser.add_argument("--on_beam", action="store_true",
                        help="beamline credit compare: run the comparison as a Beam job "
                             "(pipelines.compare; any Beam option then applies, and "
                             "--shadow_evidence/--shadow_truth judge a shadow's live rows)")
    args = parser.parse_args(argv)
    args.snapshot += [s.strip() for s in (args.snapshots or "").split(",") if s.strip()]
    try:
        record = compare(args.registry, args.model, args.challenger, args.champion,
                         args.snapshot, args.rules)
        path = write_record(args.registry, record)
        print(describe(record) + f"\n  decision record: {path}")
        if record["accepted"] and args.promote:
            alias = args.champion if not args.champion.startswith("v") else PRODUCTION
            entry = promote(args.registry, args.model, record["challenger"]["version"], alias,
                            reason="challenger accepted against champion", decision=path)
            print(f"  promoted: {alias} {entry['from']} -> {entry['to']}")
    except (CompareError, RegistryError, SnapshotError, ConfigError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0 if record["accepted"] else PROMOTION_REFUSED


if __name__ == "__main__":
    sys.exit(run_command(main))
