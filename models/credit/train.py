"""Train the credit model on the UCI German credit set and publish it to the registry.

Usage::

    python -m models.credit.train --data ../shared/data/credit/german.data --registry registry

The split is a seeded, stratified hold-out; the manifest records the hold-out metrics, the input
schema and per-feature training statistics that the evaluation job compares against for drift.
"""

import argparse
import datetime
import logging
import os
import sys
import tempfile

import numpy as np

from models import registry as model_registry
from models.credit.data import load_german
from models.credit.schema import CATEGORICAL_FIELDS, NUMERIC_FIELDS, input_schema
from models.metrics import accuracy, brier_score, log_loss, roc_auc
from models.provenance import code_version, library_versions, sha256_file
from transforms.slices import fairness_gaps, group_members, load_config

LOGGER = logging.getLogger(__name__)
MODEL_NAME = "credit"
# Published cost matrix of the data set: approving a bad risk costs 5, declining a good one 1.
# Approving is cheaper in expectation iff p_good * 1 > (1 - p_good) * 5, i.e. p_good > 5/6.
COST_BAD_APPROVED = 5.0
COST_GOOD_DECLINED = 1.0
DECISION_THRESHOLD = COST_BAD_APPROVED / (COST_BAD_APPROVED + COST_GOOD_DECLINED)
EVALUATION_CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "transforms", "rules", "evaluation_credit_scoring.json")
QUANTILES = tuple(np.round(np.linspace(0.0, 1.0, 11), 2))


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


def numeric_stats(values: np.ndarray) -> dict:
    """Quantiles, decile histogram, mean and std of one numeric feature."""
    values = np.asarray(values, dtype=float)
    quantiles = np.quantile(values, QUANTILES)
    edges = np.unique(quantiles)
    counts, _ = np.histogram(values, bins=edges) if len(edges) > 1 else ([len(values)], None)
    return {
        "kind": "numeric",
        "count": int(len(values)),
        "mean": float(values.mean()),
        "std": float(values.std()),
        "min": float(values.min()),
        "max": float(values.max()),
        "quantile_levels": [float(q) for q in QUANTILES],
        "quantiles": [float(q) for q in quantiles],
        "histogram_edges": [float(e) for e in edges],
        "histogram_counts": [int(c) for c in counts],
    }


def categorical_stats(values: list[str]) -> dict:
    """Counts and frequencies of each category code."""
    codes, counts = np.unique(np.asarray(values, dtype=object).astype(str), return_counts=True)
    total = int(counts.sum())
    return {
        "kind": "categorical",
        "count": total,
        "counts": {str(c): int(n) for c, n in zip(codes, counts)},
        "frequencies": {str(c): float(n / total) for c, n in zip(codes, counts)},
    }


def feature_statistics(records: list[dict]) -> dict:
    """Training statistics of every model input, for drift checks later."""
    stats = {}
    for name in NUMERIC_FIELDS:
        stats[name] = numeric_stats(np.asarray([r[name] for r in records]))
    for name in CATEGORICAL_FIELDS:
        stats[name] = categorical_stats([r[name] for r in records])
    return stats


def holdout_metrics(labels: np.ndarray, scores: np.ndarray) -> dict:
    """AUC, log loss, Brier score, accuracy and expected cost at the decision threshold."""
    approved = scores >= DECISION_THRESHOLD
    cost = (COST_BAD_APPROVED * np.sum(approved & (labels == 0))
            + COST_GOOD_DECLINED * np.sum(~approved & (labels == 1)))
    return {
        "count": int(len(labels)),
        "auc": roc_auc(labels, scores),
        "log_loss": log_loss(labels, scores),
        "brier": brier_score(labels, scores),
        "decision_threshold": DECISION_THRESHOLD,
        "accuracy_at_threshold": accuracy(labels, scores, DECISION_THRESHOLD),
        "approval_rate_at_threshold": float(approved.mean()),
        "expected_cost_per_applicant": float(cost / len(labels)),
    }


def _json_number(value):
    """NaN -> None, so the manifest stays standard JSON."""
    return None if isinstance(value, float) and np.isnan(value) else value


def holdout_slice_gaps(records: list[dict], labels: np.ndarray, scores: np.ndarray,
                       config_path: str = EVALUATION_CONFIG) -> dict:
    """Fairness gaps of every configured slice group on the hold-out set: the baseline that
    evaluation compares later gaps with (a gap the data itself carries is not drift)."""
    config = load_config(config_path)
    approved = scores >= DECISION_THRESHOLD
    gaps = {}
    for dimension in config.get("slices", []):
        gaps[dimension["name"]] = {}
        for group, member in group_members(dimension, records):
            figures = fairness_gaps(labels, approved, member, config.get("min_slice_size", 30),
                                    config.get("min_class_count", 5))
            gaps[dimension["name"]][group] = {
                k: _json_number(figures[k]) for k in (
                    "size", "approval_rate", "approval_rate_ratio", "approval_rate_diff",
                    "tpr_diff", "fpr_diff", "small")}
    return gaps


def train(data: str, registry: str, seed: int = 42, epochs: int = 60,
          holdout_fraction: float = 0.2, command: str | None = None):
    """Train, evaluate on the hold-out and publish; returns the new registry ModelRef."""
    import keras
    import tensorflow as tf

    from models.credit.model import build_credit_model, predict_scores, to_model_inputs

    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()
    records, labels = load_german(data)
    train_idx, holdout_idx = stratified_split(labels, holdout_fraction, seed)
    train_records = [records[i] for i in train_idx]
    holdout_records = [records[i] for i in holdout_idx]

    model = build_credit_model(train_records)
    model.fit(to_model_inputs(train_records), labels[train_idx].astype(np.float32),
              epochs=epochs, batch_size=32, shuffle=True, verbose=0)
    holdout_scores = predict_scores(model, holdout_records)
    metrics = holdout_metrics(labels[holdout_idx], holdout_scores)
    train_scores = predict_scores(model, train_records)
    LOGGER.info("hold-out metrics: %s", metrics)

    manifest = {
        "created_at": datetime.datetime.now(datetime.UTC).isoformat(),
        "training_data": os.path.abspath(data),
        "training_data_sha256": sha256_file(data),
        "code_version": code_version(),
        "library_versions": library_versions(),
        "training_command": command or " ".join(["python -m models.credit.train", *sys.argv[1:]]),
        "seed": seed,
        "epochs": epochs,
        "split": {"kind": "stratified holdout", "holdout_fraction": holdout_fraction,
                  "train_count": int(len(train_idx)), "holdout_count": int(len(holdout_idx))},
        "target": "probability of a good credit risk (label 1 in german.data)",
        "input_schema": input_schema(),
        "holdout_metrics": metrics,
        "holdout_slices": holdout_slice_gaps(holdout_records, labels[holdout_idx],
                                             holdout_scores),
        "feature_statistics": feature_statistics(train_records),
        "score_statistics": numeric_stats(train_scores),
    }
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.keras")
        model.save(path)
        return model_registry.publish(registry, MODEL_NAME, path, manifest)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="../shared/data/credit/german.data",
                        help="path of german.data")
    parser.add_argument("--registry", default="registry", help="registry root folder")
    parser.add_argument("--seed", type=int, default=42, help="seed of split, init and shuffling")
    parser.add_argument("--epochs", type=int, default=60, help="training epochs")
    parser.add_argument("--holdout_fraction", type=float, default=0.2,
                        help="share of each class held out for evaluation")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    ref = train(args.data, args.registry, args.seed, args.epochs, args.holdout_fraction)
    m = ref.manifest["holdout_metrics"]
    print(f"published {ref.name} {ref.version} -> {ref.path}\n"
          f"hold-out AUC {m['auc']:.3f}, log loss {m['log_loss']:.3f}, "
          f"accuracy@{m['decision_threshold']:.3f} {m['accuracy_at_threshold']:.3f}")


if __name__ == "__main__":
    main()
