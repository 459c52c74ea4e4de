"""Drift of model inputs (and scores) against the training statistics in the model's manifest.

Numbers: PSI on the training deciles as bins (the manifest's ``histogram_edges`` and
``histogram_counts``), outer bins open-ended so values beyond the training range still count.
Categories: PSI, L-infinity and Jensen-Shannon divergence on code frequencies; a code never seen
in training counts against a near-empty expected bin. A limit never sits below the figure's
sampling-noise floor for the window's size (``noise_floors``), so a quiet week with few rows
does not raise a false alarm. Pure functions.
"""

import numpy as np
from scipy import stats

from models.metrics import jensen_shannon, psi

DEFAULT_THRESHOLD = {"psi": 0.2}


def numeric_drift(training: dict, values) -> dict:
    """PSI of ``values`` on the training decile bins.

    Args:
        training: the manifest's statistics of the feature (``kind`` numeric).
        values: the evaluated window's values (NaNs ignored).
    """
    values = np.asarray(values, dtype=float)
    values = values[~np.isnan(values)]
    edges = np.asarray(training["histogram_edges"], dtype=float)
    expected = np.asarray(training["histogram_counts"], dtype=float)
    expected = expected / expected.sum()
    # Interior edges only: the first and last bins reach to -inf / +inf.
    bins = np.digitize(values, edges[1:-1], right=False)
    observed = np.bincount(bins, minlength=len(expected)).astype(float)
    observed = observed / max(len(values), 1)
    return {"psi": psi(expected, observed), "count": int(len(values)),
            "mean": float(values.mean()) if len(values) else float("nan"),
            "training_mean": float(training["mean"])}


def categorical_drift(training: dict, values) -> dict:
    """PSI, L-infinity and Jensen-Shannon divergence of code frequencies.

    Args:
        training: the manifest's statistics of the feature (``kind`` categorical).
        values: the evaluated window's codes.
    """
    values = [str(v) for v in values]
    codes = sorted(set(training["frequencies"]) | set(values))
    expected = np.asarray([training["frequencies"].get(c, 0.0) for c in codes])
    counts = {c: 0 for c in codes}
    for v in values:
        counts[v] += 1
    observed = np.asarray([counts[c] for c in codes], dtype=float) / max(len(values), 1)
    unseen = [c for c in codes if c not in training["frequencies"] and counts[c]]
    return {"psi": psi(expected, observed), "linf": float(np.max(np.abs(observed - expected))),
            "js": jensen_shannon(expected, observed) if values else float("nan"),
            "count": len(values), "unseen_codes": unseen}


def feature_drift(training: dict, values) -> dict:
    """Drift figures of one feature, by its kind in the manifest."""
    if training["kind"] == "numeric":
        return numeric_drift(training, values)
    return categorical_drift(training, values)


def drift_report(feature_statistics: dict, columns: dict, thresholds: dict,
                 default: dict | None = None) -> list[dict]:
    """Drift of every feature that has training statistics, with the threshold verdicts.

    Args:
        feature_statistics: the manifest's per-feature statistics (plus "score" if wanted).
        columns: feature name -> the evaluated window's values.
        thresholds: feature name -> {figure: limit}, e.g. {"credit_amount": {"psi": 0.1}}.
        default: limits of features without their own (default PSI 0.2).

    Returns:
        One dict per feature: feature, kind, the figures, ``limits`` (the configured ones
        raised to the noise floor where that is higher), ``exceeded`` (the figures over their
        limit) and ``drifted`` (any exceeded). Features absent from ``columns`` are skipped.
    """
    default = default or DEFAULT_THRESHOLD
    report = []
    for name, training in feature_statistics.items():
        if name not in columns:
            continue
        figures = feature_drift(training, columns[name])
        floors = noise_floors(training, figures["count"])
        configured = thresholds.get(name, default)
        limits = {k: max(limit, floors.get(k, 0.0)) for k, limit in configured.items()}
        exceeded = sorted(k for k, limit in limits.items()
                          if np.isfinite(figures.get(k, np.nan)) and figures[k] > limit)
        report.append({"feature": name, "kind": training["kind"], **figures,
                       "limits": limits, "configured_limits": dict(configured),
                       "noise_floors": floors, "exceeded": exceeded,
                       "drifted": bool(exceeded)})
    return report


def noise_floors(training: dict, count: int, quantile: float = 0.99) -> dict:
    """What a figure reaches by sampling noise alone in ``quantile`` of same-distribution
    windows of ``count`` rows: a limit below it would fire on small windows for nothing.

    PSI of a sample against fixed expected bins is about chi-square with (bins - 1) degrees of
    freedom over ``count``; a share's deviation is at most 0.5 / sqrt(count) standard errors.
    """
    if count <= 0:
        return {"psi": float("inf"), "linf": float("inf")}
    bins = (len(training["histogram_counts"]) if training["kind"] == "numeric"
            else len(training["frequencies"]))
    z = stats.norm.ppf(1 - (1 - quantile) / 2)
    return {"psi": float(stats.chi2.ppf(quantile, max(bins - 1, 1)) / count),
            "linf": float(z * 0.5 / np.sqrt(count))}
