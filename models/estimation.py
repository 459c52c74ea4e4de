"""Performance estimated before the labels arrive: confidence-based performance estimation (CBPE).

With calibrated probabilities p (of a good outcome) for the rows a model scored, the expected
value of a figure is computed as if each outcome were a coin with chance p: expected AUC,
accuracy of the decisions and the cost per applicant, and the approval rate (observed, it needs
no label). Pure numpy.

Rows are not independent applicants: a replay or a returning customer repeats an applicant, and
repeated rows share one outcome. So rows are grouped into applicants (``clusters``): the expected
AUC leaves out the pairs of one applicant's rows (they can never be a good/bad pair), and the
interval draws one outcome per applicant, not per row.

What the interval means: the range (2.5th to 97.5th percentile) of the figure these rows will
show once their labels arrive, over replicates that draw each distinct applicant's outcome from
its calibrated probability (one outcome for all of an applicant's rows). If the calibrated
probabilities hold, the realized figure falls inside it about 95 times in 100. Resampling the
applicants as well would answer another question (the figure of the population they came
from): on calibrated simulated windows it covered the realized figure 99.5 times in 100 with
an interval 44 % wider. Neither covers an error of the calibration itself, nor a change of the
outcomes for given inputs (concept shift), which no label-free estimate can see.
"""

import numpy as np

ESTIMATED_METRICS = ("auc", "accuracy", "expected_cost_per_applicant", "approval_rate")
LEVEL = 0.95
REPLICATE_BLOCK = 50


def _cluster_index(clusters) -> np.ndarray:
    _, index = np.unique(np.asarray(clusters, dtype=object).astype(str), return_inverse=True)
    return index


def _tie_groups(scores: np.ndarray):
    """Row order by descending score and the start of each run of equal scores in it."""
    order = np.argsort(-scores, kind="mergesort")
    sorted_scores = scores[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_scores)) + 1]
    return order, starts


def _weighted_auc(order, starts, positive, negative):
    """AUC from per-row positive and negative weights (rows first, replicates after),
    rows already in ``order``: sum over negatives of the positive weight ranked above them,
    ties counting one half, over (total positive x total negative)."""
    pos = np.add.reduceat(positive[order], starts, axis=0)
    neg = np.add.reduceat(negative[order], starts, axis=0)
    above = np.cumsum(pos, axis=0) - pos
    numerator = (neg * (above + pos / 2)).sum(axis=0)
    return numerator, pos.sum(axis=0), neg.sum(axis=0)


def expected_auc(probabilities, scores, clusters=None) -> float:
    """Expected AUC: E[pairs ranked right] / E[good x bad pairs] over pairs of different
    applicants (NaN when the expected number of such pairs is zero)."""
    p = np.asarray(probabilities, dtype=float)
    scores = np.asarray(scores, dtype=float)
    if p.size < 2:
        return float("nan")
    index = _cluster_index(clusters if clusters is not None else np.arange(p.size))
    order, starts = _tie_groups(scores)
    numerator, total_pos, total_neg = _weighted_auc(order, starts, p, 1 - p)
    # Pairs of one applicant's rows (the row with itself included) are never a good/bad pair:
    # they tie, so each counted p(1-p) in the denominator and half of it in the numerator.
    sizes = np.bincount(index)
    p_cluster = np.bincount(index, weights=p) / sizes
    same = float(np.sum(sizes ** 2 * p_cluster * (1 - p_cluster)))
    denominator = total_pos * total_neg - same
    if denominator <= 1e-12:
        return float("nan")
    return float((numerator - same / 2) / denominator)


def _costs(approved, good, costs):
    return costs["bad_approved"] * (approved & ~good) + costs["good_declined"] * (~approved
                                                                                    & good)


def estimate(probabilities, scores, approved, clusters=None, costs: dict | None = None
             ) -> dict:
    """Expected figures of the rows (``ESTIMATED_METRICS``; expected cost NaN without costs)."""
    p = np.asarray(probabilities, dtype=float)
    approved = np.asarray(approved, dtype=bool)
    if p.size == 0:
        return {name: float("nan") for name in ESTIMATED_METRICS}
    figures = {
        "auc": expected_auc(p, scores, clusters),
        "accuracy": float(np.mean(np.where(approved, p, 1 - p))),
        "approval_rate": float(approved.mean()),
        "expected_cost_per_applicant": float("nan"),
    }
    if costs:
        figures["expected_cost_per_applicant"] = float(np.mean(np.where(
            approved, (1 - p) * costs["bad_approved"], p * costs["good_declined"])))
    return figures


def interval(probabilities, scores, approved, clusters=None, costs: dict | None = None,
             replicates: int = 400, seed: int = 0) -> dict:
    """The interval of each estimated figure (module docstring): {metric: (low, high)}, by
    drawing each applicant's outcome from its probability, once for all its rows; NaN bounds
    where a figure is undefined in most replicates (e.g. AUC of a handful of rows)."""
    p = np.asarray(probabilities, dtype=float)
    scores = np.asarray(scores, dtype=float)
    approved = np.asarray(approved, dtype=bool)
    if p.size == 0:
        return {name: (float("nan"), float("nan")) for name in ESTIMATED_METRICS}
    index = _cluster_index(clusters if clusters is not None else np.arange(p.size))
    n_clusters = int(index.max()) + 1
    p_cluster = np.bincount(index, weights=p) / np.bincount(index)
    rng = np.random.default_rng(seed)
    order, starts = _tie_groups(scores)
    figures: dict[str, list] = {name: [] for name in ESTIMATED_METRICS}
    # Replicates in blocks: a rows x block matrix at a time, however many rows a window has.
    for first in range(0, replicates, REPLICATE_BLOCK):
        block = min(REPLICATE_BLOCK, replicates - first)
        good = (rng.random((block, n_clusters)) < p_cluster)[:, index].T   # rows x block
        numerator, total_pos, total_neg = _weighted_auc(order, starts, good.astype(float),
                                                        (~good).astype(float))
        with np.errstate(invalid="ignore", divide="ignore"):
            figures["auc"].append(np.where(total_pos * total_neg > 0,
                                           numerator / (total_pos * total_neg), np.nan))
        figures["accuracy"].append((approved[:, None] == good).mean(axis=0))
        figures["approval_rate"].append(np.full(block, approved.mean()))  # observed
        figures["expected_cost_per_applicant"].append(
            _costs(approved[:, None], good, costs).mean(axis=0) if costs
            else np.full(block, np.nan))
    tail = (1 - LEVEL) / 2 * 100
    out = {}
    for name, blocks in figures.items():
        values = np.concatenate(blocks)
        values = values[np.isfinite(values)]
        out[name] = ((float(np.percentile(values, tail)), float(np.percentile(values,
                                                                               100 - tail)))
                     if values.size >= replicates / 2 else (float("nan"), float("nan")))
    return out
