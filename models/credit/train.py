"""Train a credit model on a configured data set and publish it to the registry.

Usage::

    # the UCI German credit set, as config/datasets/credit_german.json describes it
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
import sys
import tempfile

import numpy as np

from models import registry as model_registry
from models.config import (
    EVALUATION_DEFAULTS,
    ConfigError,
    default_path,
    load_evaluation_config,
)
from models.credit.dataset import (
    DataError,
    Dataset,
    add_dataset_arguments,
    load_dataset,
    read_data,
    resolve_data_path,
)
from models.metrics import accuracy, brier_score, expected_cost, log_loss, roc_auc
from models.provenance import code_version, library_versions, sha256_file
from models.slices import fairness_gaps, group_members
from models.statistics import feature_statistics, numeric_stats

LOGGER = logging.getLogger(__name__)


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


def train(config: str, registry: str, data: str | None = None, seed: int = 42,
          epochs: int = 60, holdout_fraction: float = 0.2, evaluation_config: str | None = None,
          command: str | None = None):
    """Train on a configured data set, evaluate on the hold-out and publish.

    Args:
        config: data set configuration file, or a model name under config/datasets/.
        registry: registry root.
        data: the training file (default: the configuration's ``data``).
        seed: seed of split, initialisation and shuffling.
        epochs: training epochs.
        holdout_fraction: share of each class held out.
        evaluation_config: slices for the hold-out gaps (default:
            config/evaluation/<model name>.json when it exists).
        command: recorded as the training command (default: this process's arguments).

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
    evaluation_path = evaluation_config or default_path("evaluation", dataset.model_name)
    try:
        evaluation = load_evaluation_config(evaluation_path, dataset.kinds)
    except ConfigError:
        if evaluation_config:
            raise
        LOGGER.warning("no usable evaluation configuration at %s: no hold-out slice gaps",
                       evaluation_path)
        evaluation = dict(EVALUATION_DEFAULTS)
    loaded = read_data(dataset, path)
    if len(np.unique(loaded.labels)) < 2:
        raise DataError(f"{path}: training needs both good and bad labels")
    LOGGER.info("read %d labelled rows from %s (left out: %s)", len(loaded.records), path,
                loaded.dropped)
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()
    records, labels, kinds = loaded.records, loaded.labels, dataset.kinds
    train_idx, holdout_idx = stratified_split(labels, holdout_fraction, seed)
    train_records = [records[i] for i in train_idx]
    holdout_records = [records[i] for i in holdout_idx]

    model = build_credit_model(train_records, dataset)
    model.fit(to_model_inputs(train_records, kinds), labels[train_idx].astype(np.float32),
              epochs=epochs, batch_size=32, shuffle=True, verbose=0)
    holdout_scores = predict_scores(model, holdout_records, kinds)
    metrics = holdout_metrics(labels[holdout_idx], holdout_scores, dataset)
    train_scores = predict_scores(model, train_records, kinds)
    LOGGER.info("hold-out metrics: %s", metrics)

    manifest = {
        "created_at": datetime.datetime.now(datetime.UTC).isoformat(),
        "dataset": dataset.to_dict(),
        "training_data": path,
        "training_data_sha256": sha256_file(path),
        "training_rows": {"used": len(records), **loaded.dropped},
        "code_version": code_version(),
        "library_versions": library_versions(),
        "training_command": command or " ".join(["python -m models.credit.train", *sys.argv[1:]]),
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
        "feature_statistics": feature_statistics(train_records, kinds),
        "score_statistics": numeric_stats(train_scores),
    }
    with tempfile.TemporaryDirectory() as tmp:
        model_path = f"{tmp}/model.keras"
        model.save(model_path)
        return model_registry.publish(registry, dataset.model_name, model_path, manifest)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_dataset_arguments(parser)
    parser.add_argument("--registry", default="registry", help="registry root folder")
    parser.add_argument("--seed", type=int, default=42, help="seed of split, init and shuffling")
    parser.add_argument("--epochs", type=int, default=60, help="training epochs")
    parser.add_argument("--holdout_fraction", type=float, default=0.2,
                        help="share of each class held out for evaluation")
    parser.add_argument("--evaluation_config", default=None,
                        help="slices for the hold-out gaps (default: "
                             "config/evaluation/<model name>.json)")
    args = parser.parse_args(argv)
    if not 0.0 < args.holdout_fraction < 1.0:
        parser.error("--holdout_fraction must lie strictly between 0 and 1")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        ref = train(args.config, args.registry, args.data, args.seed, args.epochs,
                    args.holdout_fraction, args.evaluation_config)
    except (ConfigError, DataError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    m = ref.manifest["holdout_metrics"]
    cost = m["expected_cost_per_applicant"]
    print(f"published {ref.name} {ref.version} -> {ref.path}\n"
          f"hold-out ({m['count']} rows): AUC {m['auc']:.3f}, log loss {m['log_loss']:.3f}, "
          f"accuracy@{m['decision_threshold']:.3f} {m['accuracy_at_threshold']:.3f}"
          + (f", expected cost {cost:.3f} per applicant" if cost is not None else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
