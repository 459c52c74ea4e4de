"""Classification metrics as pure numpy functions (no scikit-learn at serving or evaluation)."""

import numpy as np


def roc_auc(labels, scores) -> float:
    """Area under the ROC curve: the chance a random positive outranks a random negative.

    Ties count one half (the Mann-Whitney U statistic with average ranks).

    Raises:
        ValueError: labels hold only one class.
    """
    labels = np.asarray(labels, dtype=bool)
    scores = np.asarray(scores, dtype=float)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("AUC needs both classes among the labels")
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    ranks = np.empty(len(scores), dtype=float)
    # Average ranks over runs of equal scores.
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_scores)) + 1]
    ends = np.r_[starts[1:], len(scores)]
    for start, end in zip(starts, ends):
        ranks[order[start:end]] = (start + end + 1) / 2.0
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def log_loss(labels, probabilities, eps: float = 1e-7) -> float:
    """Mean negative log likelihood of binary labels, probabilities clipped to [eps, 1-eps]."""
    labels = np.asarray(labels, dtype=float)
    p = np.clip(np.asarray(probabilities, dtype=float), eps, 1 - eps)
    return float(-np.mean(labels * np.log(p) + (1 - labels) * np.log(1 - p)))


def brier_score(labels, probabilities) -> float:
    """Mean squared difference between probability and outcome."""
    labels = np.asarray(labels, dtype=float)
    return float(np.mean((np.asarray(probabilities, dtype=float) - labels) ** 2))


def accuracy(labels, probabilities, threshold: float) -> float:
    """Share of labels equal to (probability >= threshold)."""
    predicted = np.asarray(probabilities, dtype=float) >= threshold
    return float(np.mean(predicted == np.asarray(labels, dtype=bool)))


def detection_scores(truth, detected) -> dict:
    """POD, FAR and CSI of a detected class against the truth (boolean arrays, same shape).

    POD = hits / (hits + misses), FAR = false alarms / (hits + false alarms),
    CSI = hits / (hits + misses + false alarms); a ratio with a zero denominator is NaN.
    """
    truth = np.asarray(truth, dtype=bool)
    detected = np.asarray(detected, dtype=bool)
    hits = int(np.sum(truth & detected))
    misses = int(np.sum(truth & ~detected))
    false_alarms = int(np.sum(~truth & detected))

    def ratio(numerator, denominator):
        return float(numerator / denominator) if denominator else float("nan")

    return {
        "pod": ratio(hits, hits + misses),
        "far": ratio(false_alarms, hits + false_alarms),
        "csi": ratio(hits, hits + misses + false_alarms),
        "hits": hits, "misses": misses, "false_alarms": false_alarms,
    }
