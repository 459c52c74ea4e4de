"""Platt scaling of a binary model's probabilities, and how well probabilities are calibrated.

Pure numpy. The calibrator is fitted at training on out-of-fold scores (every training row
scored by a model that did not learn from it) and is used only to estimate performance before
labels arrive (``models.estimation``): served scores and decisions never pass through it.
"""

import numpy as np

EPS = 1e-6


def _logit(scores) -> np.ndarray:
    p = np.clip(np.asarray(scores, dtype=float), EPS, 1 - EPS)
    return np.log(p / (1 - p))


def fit_platt(scores, labels, weights=None, iterations: int = 50) -> dict:
    """P(label = 1) = sigmoid(slope * logit(score) + intercept), fitted by Newton's method on
    the (weighted) log likelihood, with Platt's smoothed targets so that separable data do not
    drive the slope to infinity.

    Returns:
        {"method": "platt", "slope": float, "intercept": float}
    """
    x = _logit(scores)
    y = np.asarray(labels, dtype=float)
    w = np.ones_like(y) if weights is None else np.asarray(weights, dtype=float)
    n_pos, n_neg = float(w[y == 1].sum()), float(w[y == 0].sum())
    # Platt (1999): targets (N+ + 1) / (N+ + 2) and 1 / (N- + 2) instead of 1 and 0.
    target = np.where(y == 1, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2))
    design = np.column_stack([x, np.ones_like(x)])
    theta = np.array([1.0, 0.0])
    for _ in range(iterations):
        p = 1 / (1 + np.exp(-(design @ theta)))
        gradient = design.T @ (w * (p - target))
        hessian = (design * (w * p * (1 - p))[:, None]).T @ design + 1e-9 * np.eye(2)
        step = np.linalg.solve(hessian, gradient)
        theta -= step
        if np.max(np.abs(step)) < 1e-10:
            break
    return {"method": "platt", "slope": float(theta[0]), "intercept": float(theta[1])}


def apply_calibration(calibration: dict | None, scores) -> np.ndarray:
    """Calibrated probabilities; the scores unchanged without a calibrator (or one not used)."""
    scores = np.asarray(scores, dtype=float)
    if not calibration or not calibration.get("used"):
        return scores
    z = calibration["slope"] * _logit(scores) + calibration["intercept"]
    return 1 / (1 + np.exp(-z))


def expected_calibration_error(labels, probabilities, bins: int = 10) -> float:
    """Mean |observed rate - mean probability| over equal-width bins, weighted by their
    counts (NaN without rows)."""
    labels = np.asarray(labels, dtype=float)
    p = np.asarray(probabilities, dtype=float)
    if p.size == 0:
        return float("nan")
    index = np.clip((p * bins).astype(int), 0, bins - 1)
    total = 0.0
    for b in np.unique(index):
        member = index == b
        total += member.sum() * abs(labels[member].mean() - p[member].mean())
    return float(total / p.size)


def fold_indices(labels, folds: int, seed: int) -> list[np.ndarray]:
    """Stratified folds: each class spread over the folds in the same proportion."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    members = [[] for _ in range(folds)]
    for value in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == value))
        for k in range(folds):
            members[k].extend(rows[k::folds])
    return [np.sort(np.asarray(m, dtype=int)) for m in members]
