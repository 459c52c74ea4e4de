"""Slices of the evaluated population (from the evaluation configuration) and fairness gaps.

A slice dimension names one input field and splits its values into groups, either by codes
(``"groups": {"female": ["A92", "A95"]}``) or by numeric bands (``"bands": [{"name": "<25",
"max": 25}]``, ``min`` inclusive, ``max`` exclusive). A value in no group falls in "other".
``"by_value": true`` makes every value its own group: the way to slice a pseudonymised
attribute, whose stored codes are keyed hashes nobody can list in a configuration.

Each group is compared with the rest of the population (everyone outside it): approval-rate
ratio and difference, true-positive-rate difference and false-positive-rate difference, where
"positive" means approved and the truth "good risk" (label 1). A group too small to judge (or
whose rest is) is flagged ``small``, and its gaps ``significant`` only if a two-proportion z-test
says so; nothing is hidden. Pure functions.
"""

import math

import numpy as np

from models.metrics import rate

OTHER = "other"
# Rows whose field is missing (a data set may let a field be missing) form a group of their own.
MISSING = "missing"
Z_95 = 1.96


def slice_value(dimension: dict, value) -> str:
    """The group of one value under one slice dimension."""
    if value is None:
        return MISSING
    if dimension.get("by_value"):
        return str(value)
    if "groups" in dimension:
        for group, codes in dimension["groups"].items():
            if str(value) in codes:
                return group
        return OTHER
    number = float(value)
    for band in dimension["bands"]:
        if band.get("min", -math.inf) <= number < band.get("max", math.inf):
            return band["name"]
    return OTHER


def group_names(dimension: dict) -> list[str]:
    """Every group of a dimension in config order (so empty groups still show)."""
    if dimension.get("by_value"):
        return []
    if "groups" in dimension:
        return list(dimension["groups"])
    return [band["name"] for band in dimension["bands"]]


def group_members(dimension: dict, rows: list[dict]) -> list[tuple[str, np.ndarray]]:
    """(group, boolean membership over ``rows``) for every configured group of a dimension,
    then any other group present ("other")."""
    values = np.asarray([slice_value(dimension, r.get(dimension["field"])) for r in rows],
                        dtype=object)
    configured = group_names(dimension)
    present = sorted(set(values.tolist()) - set(configured))
    return [(group, values == group) for group in configured + present]


def two_proportion_z(successes_a: int, n_a: int, successes_b: int, n_b: int) -> float:
    """z statistic of the difference of two proportions (pooled); NaN if undefined."""
    if n_a == 0 or n_b == 0:
        return float("nan")
    pooled = (successes_a + successes_b) / (n_a + n_b)
    spread = math.sqrt(pooled * (1 - pooled) * (1 / n_a + 1 / n_b))
    if spread == 0:
        return float("nan")
    return (successes_a / n_a - successes_b / n_b) / spread


def fairness_gaps(labels, approved, member, min_size: int, min_class_count: int) -> dict:
    """One group against the rest.

    Args:
        labels: truth, 1 good risk / 0 bad risk.
        approved: the decision, True = approved.
        member: True for rows of the group.
        min_size: fewer rows than this -> ``small``.
        min_class_count: fewer good or bad rows than this -> ``small``.

    Returns:
        size, good/bad counts, approval rates, TPR and FPR of group and rest, the gaps,
        ``small`` and ``significant`` (approval-rate gap, z-test at 95 %).
    """
    labels = np.asarray(labels, dtype=bool)
    approved = np.asarray(approved, dtype=bool)
    member = np.asarray(member, dtype=bool)
    rest = ~member
    group = {
        "size": int(member.sum()),
        "good": int((labels & member).sum()),
        "bad": int((~labels & member).sum()),
        "approval_rate": rate(approved[member]),
        "approval_rate_rest": rate(approved[rest]),
        "tpr": rate(approved, labels & member),
        "tpr_rest": rate(approved, labels & rest),
        "fpr": rate(approved, ~labels & member),
        "fpr_rest": rate(approved, ~labels & rest),
    }
    rest_rate = group["approval_rate_rest"]
    group["approval_rate_ratio"] = (group["approval_rate"] / rest_rate
                                    if rest_rate and not math.isnan(rest_rate) else float("nan"))
    group["approval_rate_diff"] = group["approval_rate"] - rest_rate
    group["tpr_diff"] = group["tpr"] - group["tpr_rest"]
    group["fpr_diff"] = group["fpr"] - group["fpr_rest"]
    # Too few rows on either side (the group or the rest) and a gap means nothing.
    rest_good, rest_bad = int((labels & rest).sum()), int((~labels & rest).sum())
    group["small"] = (min(group["size"], int(rest.sum())) < min_size
                      or min(group["good"], group["bad"], rest_good, rest_bad) < min_class_count)
    z = two_proportion_z(int(approved[member].sum()), group["size"],
                         int(approved[rest].sum()), int(rest.sum()))
    group["approval_z"] = z
    group["significant"] = bool(not group["small"] and not math.isnan(z) and abs(z) >= Z_95)
    return group
