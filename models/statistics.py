"""Training statistics of model inputs and scores, kept in the manifest for drift checks later.

Pure functions shared by every model's training and by evaluation. Missing values (None, NaN)
are left out of the figures and counted in ``missing``.
"""

import numpy as np

QUANTILES = tuple(np.round(np.linspace(0.0, 1.0, 11), 2))


def numeric_stats(values) -> dict:
    """Quantiles, decile histogram, mean and std of one numeric feature."""
    if not isinstance(values, np.ndarray):
        values = [np.nan if v is None else v for v in values]
    values = np.asarray(values, dtype=float)
    missing = int(np.isnan(values).sum())
    values = values[~np.isnan(values)]
    if values.size == 0:
        return {"kind": "numeric", "count": 0, "missing": missing}
    quantiles = np.quantile(values, QUANTILES)
    edges = np.unique(quantiles)
    counts, _ = np.histogram(values, bins=edges) if len(edges) > 1 else ([len(values)], None)
    return {
        "kind": "numeric",
        "count": int(len(values)),
        "missing": missing,
        "mean": float(values.mean()),
        "std": float(values.std()),
        "min": float(values.min()),
        "max": float(values.max()),
        "quantile_levels": [float(q) for q in QUANTILES],
        "quantiles": [float(q) for q in quantiles],
        "histogram_edges": [float(e) for e in edges],
        "histogram_counts": [int(c) for c in counts],
    }


def categorical_stats(values) -> dict:
    """Counts and frequencies of each category code."""
    present = [str(v) for v in values if v is not None]
    codes, counts = np.unique(np.asarray(present, dtype=object).astype(str),
                              return_counts=True)
    total = int(counts.sum())
    return {
        "kind": "categorical",
        "count": total,
        "missing": len(values) - len(present),
        "counts": {str(c): int(n) for c, n in zip(codes, counts)},
        "frequencies": {str(c): float(n / total) for c, n in zip(codes, counts)},
    }


def feature_statistics(records: list[dict], kinds: dict[str, str]) -> dict:
    """Training statistics of every model input.

    Args:
        records: the training rows.
        kinds: ``{field: "numeric" | "categorical"}`` in the data set's order.
    """
    return {name: (numeric_stats if kind == "numeric" else categorical_stats)(
                [r.get(name) for r in records])
            for name, kind in kinds.items()}
