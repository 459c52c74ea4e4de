"""Train a credit model on a configured data set and publish it to the registry.

Usage::

    # the UCI German credit set, as <config>/datasets/credit_german.json describes it
    python -m models.credit.train --config credit_german --registry registry

    # any data set: a configuration file names its file, fields, label and costs
    python -m models.credit.train --config my_bank.json --data applicants.csv --registry registry

The split is a seeded, stratified hold-out; the manifest records the data set configuration, the
hold-out metrics and slice gaps, and per-feature training statistics that the evaluation job
compares against for drift.
"""

import argparse
import datetime
import logging
import shlex
import sys
import tempfile

import numpy as np

from models import registry as model_registry
from models.calibration import (
    apply_calibration,
    expected_calibration_error,
    fit_platt,
    fold_indices,
)
from models.config import evaluation_config_for
from models.credit.dataset import (
    DataError,
    Dataset,
    add_dataset_arguments,
    load_dataset,
    read_data,
    resolve_data_path,
)
from models.credit.snapshots import (
    list_snapshots,
    read_snapshot,
    recency_weights,
)
from models.exit_codes import run_command
from models.metrics import accuracy, brier_score, expected_cost, log_loss, roc_auc
from models.promotion import promote_first
from models.provenance import code_version, library_versions, sha256_file
from models.slices import fairness_gaps, group_members
from models.statistics import feature_statistics, numeric_stats

LOGGER = logging.getLogger(__name__)
SMOKE_ROWS = 8


def stratified_split(labels: np.ndarray, holdout_fraction: float, seed: int):
    """Indices (train, holdout) with each class split in the same proportion."""
    rng = np.random.default_rng(seed)
    train, holdout = [], []
    for cls in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == cls))
        n_holdout = int(round(len(members) * holdout_fraction))
        holdout.extend(members[:n_holdout])
        train.extend(members[n_holdout:])
    return np.sort(np.asarray(train)), np.sort(np.asarray(holdout))


def holdout_metrics(labels: np.ndarray, scores: np.ndarray, dataset: Dataset) -> dict:
    """AUC, log loss, Brier score, accuracy and (with known costs) expected cost at the data
    set's decision threshold."""
    threshold = dataset.decision_threshold
    approved = scores >= threshold
    costs = dataset.costs
    return {
        "count": int(len(labels)),
        "auc": roc_auc(labels, scores),
        "log_loss": log_loss(labels, scores),
        "brier": brier_score(labels, scores),
        "decision_threshold": threshold,
        "accuracy_at_threshold": accuracy(labels, scores, threshold),
        "approval_rate_at_threshold": float(approved.mean()),
        "expected_cost_per_applicant": (
            expected_cost(labels, approved, costs["bad_approved"], costs["good_declined"])
            if costs else None),
    }


def _json_number(value):
    """NaN -> None, so the manifest stays standard JSON."""
    return None if isinstance(value, float) and np.isnan(value) else value


def holdout_slice_gaps(records: list[dict], labels: np.ndarray, scores: np.ndarray,
                       evaluation: dict, threshold: float) -> dict:
    """Fairness gaps of every configured slice group on the hold-out set: the baseline that
    evaluation compares later gaps with (a gap the data itself carries is not drift)."""
    approved = scores >= threshold
    gaps = {}
    for dimension in evaluation["slices"]:
        gaps[dimension["name"]] = {}
        for group, member in group_members(dimension, records):
            figures = fairness_gaps(labels, approved, member, evaluation["min_slice_size"],
                                    evaluation["min_class_count"])
            gaps[dimension["name"]][group] = {
                k: _json_number(figures[k]) for k in (
                    "size", "approval_rate", "approval_rate_ratio", "approval_rate_diff",
                    "tpr_diff", "fpr_diff", "small")}
    return gaps


def out_of_fold_calibration(fit_and_score, labels: np.ndarray, weights: np.ndarray,
                            holdout_labels: np.ndarray, holdout_scores: np.ndarray,
                            folds: int, seed: int) -> dict:
    """A Platt calibrator fitted on out-of-fold scores of the training rows, judged on the
    hold-out: used (by performance estimation only) where it lowers the hold-out log loss.

    Args:
        fit_and_score: (train row indices, scored row indices) -> scores of the scored rows by
            a model of the same recipe trained on the train rows.
        labels, weights: of the training rows.
        holdout_labels, holdout_scores: the hold-out set scored by the published model.
        folds: number of folds (0: no calibrator).

    Returns:
        The manifest's ``calibration`` record.
    """
    raw = {"log_loss": log_loss(holdout_labels, holdout_scores),
           "ece": expected_calibration_error(holdout_labels, holdout_scores)}
    if folds < 2:
        return {"method": "none", "used": False, "holdout": raw,
                "note": "no out-of-fold calibration asked (--calibration_folds 0)"}
    out_of_fold = np.empty(len(labels))
    members = fold_indices(labels, folds, seed)
    for k, scored in enumerate(members):
        trained = np.concatenate([m for j, m in enumerate(members) if j != k])
        out_of_fold[scored] = fit_and_score(trained, scored)
    calibration = fit_platt(out_of_fold, labels, weights)
    calibrated = apply_calibration({**calibration, "used": True}, holdout_scores)
    after = {"log_loss": log_loss(holdout_labels, calibrated),
             "ece": expected_calibration_error(holdout_labels, calibrated)}
    return {**calibration, "used": bool(after["log_loss"] < raw["log_loss"]),
            "folds": folds, "fitted_on": f"{folds}-fold out-of-fold scores of the "
                                         f"{len(labels)} training rows",
            "out_of_fold_ece": expected_calibration_error(labels, out_of_fold),
            "holdout": raw, "holdout_calibrated": after,
            "purpose": "performance estimation before labels only; served scores and "
                       "decisions do not use it"}


def snapshot_inputs(registry: str, dataset: Dataset, snapshot_ids, since, until,
                    weight: float, half_life_days: float | None):
    """Rows of the chosen snapshots in [since, until), newest label per prediction id.

    Returns:
        (records, labels, weights, inputs): the inputs describe each snapshot used (id, files
        with sha256, rows taken).
    """
    ids = list(snapshot_ids) or (list_snapshots(registry, dataset.model_name) if since else [])
    by_id, inputs = {}, []
    for snapshot_id in ids:
        rows, manifest = read_snapshot(registry, dataset.model_name, snapshot_id, dataset,
                                       since, until)
        inputs.append({"kind": "snapshot", "id": snapshot_id, "files": manifest["files"],
                       "rows": len(rows), "evaluation_run_id": manifest["evaluation_run_id"]})
        for row in rows:
            known = by_id.get(row["prediction_id"])
            if known is None or row["label_time"] > known["label_time"]:
                by_id[row["prediction_id"]] = row
    rows = sorted(by_id.values(), key=lambda r: r["prediction_id"])
    records = [{name: row[name] for name in dataset.field_names} for row in rows]
    labels = np.asarray([row["label"] for row in rows], dtype=np.int64)
    weights = recency_weights([row["event_time"] for row in rows], half_life_days, weight)
    return records, labels, weights, inputs


def _date(text: str | None) -> datetime.datetime | None:
    if not text:
        return None
    value = datetime.datetime.fromisoformat(text)
    return value if value.tzinfo else value.replace(tzinfo=datetime.UTC)


def train(config: str, registry: str, data: str | None = None, seed: int = 42,
          epochs: int = 60, holdout_fraction: float = 0.2, evaluation_config: str | None = None,
          command: str | None = None, snapshots=(), since: str | None = None,
          until: str | None = None, snapshot_weight: float = 1.0,
          half_life_days: float | None = None, calibration_folds: int = 3):
    """Train on a configured data set, evaluate on the hold-out and publish.

    Args:
        config: data set configuration file, or a model name under <config>/datasets/.
        registry: registry root.
        data: the training file (default: the configuration's ``data``).
        seed: seed of split, initialisation and shuffling.
        epochs: training epochs.
        holdout_fraction: share of each class held out.
        evaluation_config: slices for the hold-out gaps (default:
            <config>/evaluation/<model name>.json when it exists).
        command: recorded as the training command (default: this process's arguments).
        snapshots: ids of training snapshots (labelled production rows) to train on besides
            the base data.
        since, until: event-time window (ISO dates) of the snapshot rows; with ``since`` and
            no ids, every snapshot of the model. ``until`` holds the newest window out, for
            challenger vs champion.
        snapshot_weight: sample weight of a snapshot row (base rows weigh 1).
        half_life_days: a snapshot row's weight halves for every this many days it is older
            than the newest one.
        calibration_folds: folds of the out-of-fold calibrator (``out_of_fold_calibration``);
            0 fits none.

    Returns:
        The new registry ModelRef.

    Raises:
        ConfigError: a configuration is invalid. DataError: the data file does not fit it.
    """
    import keras
    import tensorflow as tf

    from models.credit.model import build_credit_model, predict_scores, to_model_inputs

    dataset = load_dataset(config)
    path = resolve_data_path(dataset, data)
    # Optional: without one the hold-out has no slice gaps; a broken one is refused.
    evaluation = evaluation_config_for(evaluation_config, dataset.model_name, dataset.kinds)
    if "absent" in evaluation:
        LOGGER.warning("no evaluation configuration (%s): the hold-out has no slice gaps",
                       evaluation["absent"])
    loaded = read_data(dataset, path)
    LOGGER.info("read %d labelled rows from %s (left out: %s)", len(loaded.records), path,
                loaded.dropped)
    for note in loaded.notes:
        LOGGER.warning("%s", note)
    extra, extra_labels, extra_weights, snapshot_info = snapshot_inputs(
        registry, dataset, snapshots, _date(since), _date(until), snapshot_weight,
        half_life_days)
    records = loaded.records + extra
    labels = np.concatenate([loaded.labels, extra_labels]).astype(np.int64)
    weights = np.concatenate([np.ones(len(loaded.records)), extra_weights]).astype(np.float32)
    if len(np.unique(labels)) < 2:
        raise DataError(f"{path}: training needs both good and bad labels")
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()
    kinds = dataset.kinds
    train_idx, holdout_idx = stratified_split(labels, holdout_fraction, seed)
    train_records = [records[i] for i in train_idx]
    holdout_records = [records[i] for i in holdout_idx]

    def fit(rows: np.ndarray):
        model = build_credit_model([records[i] for i in rows], dataset)
        model.fit(to_model_inputs([records[i] for i in rows], kinds),
                  labels[rows].astype(np.float32), sample_weight=weights[rows], epochs=epochs,
                  batch_size=32, shuffle=True, verbose=0)
        return model

    model = fit(train_idx)
    holdout_scores = predict_scores(model, holdout_records, kinds)
    train_scores = predict_scores(model, train_records, kinds)
    bad = int(np.sum(~np.isfinite(holdout_scores)) + np.sum(~np.isfinite(train_scores)))
    if bad:  # never published: every figure and decision of such a version would be NaN
        raise DataError(f"{bad} of {len(records)} training and hold-out scores are NaN or "
                        f"infinite: the model is not published; look for non-finite values in "
                        f"{path} or the snapshots")
    metrics = holdout_metrics(labels[holdout_idx], holdout_scores, dataset)
    LOGGER.info("hold-out metrics: %s", metrics)
    calibration = out_of_fold_calibration(
        lambda fitted, scored: predict_scores(fit(train_idx[fitted]),
                                              [train_records[i] for i in scored], kinds),
        labels[train_idx], weights[train_idx], labels[holdout_idx], holdout_scores,
        calibration_folds, seed)
    LOGGER.info("calibration: %s", calibration)

    manifest = {
        "created_at": datetime.datetime.now(datetime.UTC).isoformat(),
        "dataset": dataset.to_dict(),
        "training_data": path,
        "training_data_sha256": sha256_file(path),
        "training_rows": {"used": len(records), "base": len(loaded.records),
                          "snapshots": len(extra), **loaded.dropped},
        "training_data_notes": list(loaded.notes),
        # Every input with its sha256: "what was this version trained on" has one answer.
        "training_inputs": [{"kind": "base", "path": path, "sha256": sha256_file(path),
                             "rows": len(loaded.records)}, *snapshot_info],
        "training_window": {"since": since, "until": until,
                            "snapshot_weight": snapshot_weight,
                            "half_life_days": half_life_days},
        "code_version": code_version(),
        "library_versions": library_versions(),
        "training_command": command or shlex.join(["python", "-m", "models.credit.train",
                                                    *sys.argv[1:]]),
        "seed": seed,
        "epochs": epochs,
        "split": {"kind": "stratified holdout", "holdout_fraction": holdout_fraction,
                  "train_count": int(len(train_idx)), "holdout_count": int(len(holdout_idx))},
        "target": f"probability of a good outcome ({dataset.label_column} = "
                  f"{dataset.good_label!r})",
        "input_schema": [f.to_dict() for f in dataset.fields],
        "holdout_metrics": metrics,
        "holdout_slices": holdout_slice_gaps(holdout_records, labels[holdout_idx],
                                             holdout_scores, evaluation,
                                             dataset.decision_threshold),
        "evaluation_config_version": evaluation.get("config_version"),
        "model_kind": "credit",
        # Promotion re-scores these and must get the same scores (models.promotion).
        "smoke": {"inputs": holdout_records[:SMOKE_ROWS],
                  "scores": [float(x) for x in holdout_scores[:SMOKE_ROWS]]},
        "calibration": calibration,
        "feature_statistics": feature_statistics(train_records, kinds),
        "score_statistics": numeric_stats(train_scores),
    }
    with tempfile.TemporaryDirectory() as tmp:
        model_path = f"{tmp}/model.keras"
        model.save(model_path)
        # The stateless serving function (services.model_server, TF Serving, Vertex AI) calls
        # this signature over the raw request fields: preprocessing travels inside it too.
        model.export(f"{tmp}/saved_model", format="tf_saved_model", verbose=False)
        ref = model_registry.publish(registry, dataset.model_name, model_path, manifest,
                                     exports={"saved_model": f"{tmp}/saved_model"})
    promote_first(registry, ref)
    return ref


def calibration_line(calibration: dict) -> str:
    """The calibrator in one line, as training prints it."""
    raw = calibration["holdout"]
    if calibration["method"] == "none":
        return f"calibration: none; hold-out ECE {raw['ece']:.3f}"
    after = calibration["holdout_calibrated"]
    return (f"calibration ({calibration['fitted_on']}): hold-out ECE {raw['ece']:.3f} -> "
            f"{after['ece']:.3f}, log loss {raw['log_loss']:.3f} -> {after['log_loss']:.3f}: "
            + ("used by performance estimation" if calibration["used"]
               else "not used (it does not lower the hold-out log loss)"))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_dataset_arguments(parser)
    parser.add_argument("--registry", default="registry", help="registry root folder")
    parser.add_argument("--seed", type=int, default=42, help="seed of split, init and shuffling")
    parser.add_argument("--epochs", type=int, default=60, help="training epochs")
    parser.add_argument("--holdout_fraction", type=float, default=0.2,
                        help="share of each class held out for evaluation")
    parser.add_argument("--snapshot", action="append", default=[],
                        help="a training snapshot (labelled production rows, written by "
                             "pipelines.evaluate) to train on besides the base data; repeat it")
    parser.add_argument("--since", default=None,
                        help="snapshot rows from this date (with no --snapshot: all snapshots)")
    parser.add_argument("--until", default=None,
                        help="snapshot rows before this date: hold the newest window out for "
                             "challenger vs champion")
    parser.add_argument("--snapshot_weight", type=float, default=1.0,
                        help="sample weight of a snapshot row (base rows weigh 1)")
    parser.add_argument("--half_life_days", type=float, default=None,
                        help="a snapshot row's weight halves per this many days of age")
    parser.add_argument("--calibration_folds", type=int, default=3,
                        help="folds of the out-of-fold Platt calibrator that performance "
                             "estimation uses (0: none; served scores never use it)")
    parser.add_argument("--evaluation_config", default=None,
                        help="slices for the hold-out gaps (default: "
                             "<config>/evaluation/<model name>.json)")
    args = parser.parse_args(argv)
    if not 0.0 < args.holdout_fraction < 1.0:
        parser.error("--holdout_fraction must lie strictly between 0 and 1")
    if args.calibration_folds == 1 or args.calibration_folds < 0:
        parser.error("--calibration_folds must be 0 (none) or at least 2")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        ref = train(args.config, args.registry, args.data, args.seed, args.epochs,
                    args.holdout_fraction, args.evaluation_config,
                    snapshots=args.snapshot, since=args.since, until=args.until,
                    snapshot_weight=args.snapshot_weight, half_life_days=args.half_life_days,
                    calibration_folds=args.calibration_folds)
    except (ValueError, OSError) as error:  # configuration, data, snapshot or date errors
        print(f"error: {error}", file=sys.stderr)
        return 2
    m = ref.manifest["holdout_metrics"]
    cost = m["expected_cost_per_applicant"]
    print(f"published {ref.name} {ref.version} -> {ref.path}\n"
          f"hold-out ({m['count']} rows): AUC {m['auc']:.3f}, log loss {m['log_loss']:.3f}, "
          f"accuracy@{m['decision_threshold']:.3f} {m['accuracy_at_threshold']:.3f}"
          + (f", expected cost {cost:.3f} per applicant" if cost is not None else "")
          + "\n" + calibration_line(ref.manifest["calibration"]))
    return 0


if __name__ == "__main__":
    sys.exit(run_command(main))
