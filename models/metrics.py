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


def heidke_skill_score(hits: int, misses: int, false_alarms: int,
                       correct_negatives: int) -> float:
    """Heidke skill score of a 2x2 contingency table: the share of correct answers beyond
    those a random forecast with the same marginals gets (1 perfect, 0 no skill; Cohen's
    kappa of the table). NaN where the table has one row or column only."""
    a, b, c, d = (float(x) for x in (hits, false_alarms, misses, correct_negatives))
    denominator = (a + c) * (c + d) + (a + b) * (b + d)
    return 2.0 * (a * d - b * c) / denominator if denominator else float("nan")


def calibration_table(labels, probabilities, bins: int = 10) -> list[dict]:
    """Reliability bins of equal width on [0, 1]: count, mean probability, observed rate.

    Empty bins are left out. A well calibrated model has mean probability ~= observed rate.
    """
    labels = np.asarray(labels, dtype=float)
    p = np.asarray(probabilities, dtype=float)
    index = np.clip((p * bins).astype(int), 0, bins - 1)
    table = []
    for b in range(bins):
        member = index == b
        if member.any():
            table.append({"low": b / bins, "high": (b + 1) / bins, "count": int(member.sum()),
                          "mean_probability": float(p[member].mean()),
                          "observed_rate": float(labels[member].mean())})
    return table


def expected_cost(labels, approved, cost_bad_approved: float,
                  cost_good_declined: float) -> float:
    """Mean cost per applicant under a cost matrix (labels: 1 good, 0 bad).

    The costs are the data set's (its configuration's ``costs``): approving a bad risk costs
    ``cost_bad_approved``, declining a good one ``cost_good_declined``, a right decision nothing.
    """
    labels = np.asarray(labels, dtype=bool)
    approved = np.asarray(approved, dtype=bool)
    if labels.size == 0:
        return float("nan")
    cost = cost_bad_approved * np.sum(approved & ~labels) + cost_good_declined * np.sum(
        ~approved & labels)
    return float(cost / labels.size)


def rate(mask, among=None) -> float:
    """Share of True in ``mask`` (optionally only where ``among`` is True); NaN if empty."""
    mask = np.asarray(mask, dtype=bool)
    if among is not None:
        mask = mask[np.asarray(among, dtype=bool)]
    return float(mask.mean()) if mask.size else float("nan")


def psi(expected_fractions, observed_fractions, eps: float = 1e-4) -> float:
    """Population stability index: sum over bins of (o - e) * ln(o / e).

    Fractions are floored at ``eps`` so an empty bin costs a large but finite amount.
    Rules of thumb: < 0.1 stable, 0.1-0.25 moderate shift, > 0.25 large shift.
    """
    e = np.maximum(np.asarray(expected_fractions, dtype=float), eps)
    o = np.maximum(np.asarray(observed_fractions, dtype=float), eps)
    return float(np.sum((o - e) * np.log(o / e)))


def jensen_shannon(p, q) -> float:
    """Jensen-Shannon divergence in bits (0 = same distribution, 1 = disjoint)."""
    p = np.asarray(p, dtype=float)
    q = np.asarray(q, dtype=float)
    p, q = p / p.sum(), q / q.sum()
    m = (p + q) / 2.0

    def kl(a, b):
        nonzero = a > 0
        return float(np.sum(a[nonzero] * np.log2(a[nonzero] / b[nonzero])))

    return 0.5 * kl(p, m) + 0.5 * kl(q, m)
