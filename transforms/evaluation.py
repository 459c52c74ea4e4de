"""Evaluation of sampled predictions against late ground truth: joining, windows, metric rows.

Everything here is a pure function over plain rows; ``pipelines/evaluate.py`` only wires them.

A metric row (``METRIC_SCHEMA``) is one figure for one (model version, window, slice): metric
history accumulates as Parquet, one file per evaluation run, and charts by a plain
``GROUP BY metric, window_start`` in DuckDB or BigQuery.
"""

import base64
import datetime
import math

import numpy as np
import pyarrow as pa

from models.metrics import (
    brier_score,
    calibration_table,
    detection_scores,
    expected_cost,
    log_loss,
    rate,
    roc_auc,
)
from transforms.drift import drift_report
from transforms.slices import fairness_gaps, group_members

ALL = "all"
WINDOWS = ("week", "day", "all")
METRICS = "metrics"

METRIC_SCHEMA = pa.schema([
    pa.field("evaluation_run_id", pa.string()),
    pa.field("evaluated_at", pa.timestamp("us", tz="UTC")),
    pa.field("pipeline", pa.string()),
    pa.field("model_name", pa.string()),
    pa.field("model_version", pa.string()),
    pa.field("window", pa.string()),          # "all", "week" or "day"
    pa.field("window_start", pa.string()),    # YYYY-MM-DD, "all" for the whole period
    pa.field("slice", pa.string()),           # slice dimension, "all" for everyone
    pa.field("slice_value", pa.string()),     # group within the dimension
    pa.field("metric", pa.string()),
    pa.field("detail", pa.string()),          # feature, calibration bin, band ... or null
    pa.field("value", pa.float64()),
    pa.field("count", pa.int64()),            # rows behind the figure
    pa.field("flag", pa.string()),            # small / significant / drifted / exceeded ...
])


class TruthError(ValueError):
    """A ground-truth record that cannot be used (missing id, time or label)."""


def parse_time(value) -> datetime.datetime:
    """An ISO-8601 text or a datetime -> aware UTC datetime.

    Raises:
        TruthError: not a time, or a time without a zone.
    """
    if isinstance(value, datetime.datetime):
        parsed = value
    else:
        try:
            parsed = datetime.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError as error:
            raise TruthError(f"label_time {value!r} is not an ISO-8601 time") from error
    if parsed.tzinfo is None:
        raise TruthError(f"label_time {value!r} has no time zone")
    return parsed.astimezone(datetime.UTC)


def truth_record(raw: dict) -> dict:
    """A ground-truth row, checked: prediction_id, label_time and a label or a mask.

    Credit labels are 1 (good risk, repaid) or 0 (bad risk). Radar truth is a removal mask in
    the sampled rows' encoding: ``mask_packed`` (bytes, or base64 text in CSV / JSON Lines)
    and ``mask_shape``.

    Raises:
        TruthError: with the reason.
    """
    prediction_id = raw.get("prediction_id")
    if prediction_id in (None, ""):
        raise TruthError("missing prediction_id")
    if raw.get("label_time") in (None, ""):
        raise TruthError(f"{prediction_id}: missing label_time")
    record = {"prediction_id": str(prediction_id), "label_time": parse_time(raw["label_time"])}
    if raw.get("mask_packed") not in (None, ""):
        packed = raw["mask_packed"]
        if isinstance(packed, str):
            packed = base64.b64decode(packed)
        shape = raw.get("mask_shape")
        if isinstance(shape, str):
            shape = [int(s) for s in shape.strip("[]").split(",")]
        if not shape or len(shape) != 2:
            raise TruthError(f"{prediction_id}: mask_packed needs a 2-d mask_shape")
        record.update(truth_mask_packed=bytes(packed), truth_mask_shape=[int(s) for s in shape])
        return record
    label = raw.get("label")
    if label in (None, "") or (isinstance(label, float) and math.isnan(label)):
        raise TruthError(f"{prediction_id}: missing label (or mask_packed)")
    try:
        number = float(label)
    except (TypeError, ValueError) as error:
        raise TruthError(f"{prediction_id}: label {label!r} is not 0 or 1") from error
    if number not in (0.0, 1.0):
        raise TruthError(f"{prediction_id}: label {label!r} is not 0 or 1")
    record["label"] = int(number)
    return record


def resolve_join(prediction_id: str, predictions: list[dict], truths: list[dict]):
    """The outcome of joining one prediction id.

    Returns:
        (row, counts): ``row`` is the prediction with its truth merged in (None if there is no
        prediction); ``counts`` says what happened: matched, predictions_unmatched,
        truth_unmatched, truth_duplicates (extra truth rows; the last label_time wins),
        prediction_duplicates (the same id written twice, e.g. by two runs; the last
        processed_at wins).
    """
    counts = {"matched": 0, "predictions_unmatched": 0, "truth_unmatched": 0,
              "truth_duplicates": max(len(truths) - 1, 0),
              "prediction_duplicates": max(len(predictions) - 1, 0)}
    truth = max(truths, key=lambda t: t["label_time"]) if truths else None
    if not predictions:
        counts["truth_unmatched"] = 1
        return None, counts
    oldest = datetime.datetime.min.replace(tzinfo=datetime.UTC)
    prediction = max(predictions, key=lambda p: p.get("processed_at") or oldest)
    if truth is None:
        counts["predictions_unmatched"] = 1
        return dict(prediction), counts
    counts["matched"] = 1
    merged = dict(prediction)
    merged.update({k: v for k, v in truth.items() if k != "prediction_id"})
    return merged, counts


def window_start(event_time: datetime.datetime, window: str) -> str:
    """Start date (UTC) of the day or ISO week (Monday) holding ``event_time``."""
    day = event_time.astimezone(datetime.UTC).date()
    if window == "week":
        day -= datetime.timedelta(days=day.weekday())
    elif window != "day":
        raise ValueError(f"window must be one of {WINDOWS}, got {window!r}")
    return day.isoformat()


def group_keys(row: dict, window: str) -> list[tuple]:
    """The (model_name, model_version, window, window_start) groups a row counts in: the whole
    period always, and its day or week unless ``window`` is "all"."""
    base = (row["model_name"], row["model_version"])
    keys = [(*base, ALL, ALL)]
    if window != ALL:
        keys.append((*base, window, window_start(row["event_time"], window)))
    return keys


def metric(name: str, value, count: int, slice_name: str = ALL, group: str = ALL,
           detail: str | None = None, flag: str | None = None) -> dict:
    """One metric row's own columns (the group's columns are added by ``keyed``)."""
    value = None if value is None or (isinstance(value, float) and math.isnan(value)) \
        else float(value)
    return {"slice": slice_name, "slice_value": group, "metric": name, "detail": detail,
            "value": value, "count": int(count), "flag": flag}


def keyed(rows: list[dict], key: tuple, pipeline: str, run: dict) -> list[dict]:
    """Add the group and run columns to metric rows."""
    model_name, model_version, window, start = key
    return [{"evaluation_run_id": run["run_id"], "evaluated_at": run["evaluated_at"],
             "pipeline": pipeline, "model_name": model_name, "model_version": model_version,
             "window": window, "window_start": start, **row} for row in rows]


# --- credit ------------------------------------------------------------------------------

CREDIT_METRICS = ("auc", "log_loss", "brier", "approval_rate", "expected_cost_per_applicant",
                  "tpr", "fpr", "good_rate")


def credit_scores(labels, scores, approved, costs: dict) -> dict:
    """The credit model's figures on labelled rows (NaN where undefined, e.g. AUC of one class)."""
    labels = np.asarray(labels, dtype=int)
    scores = np.asarray(scores, dtype=float)
    approved = np.asarray(approved, dtype=bool)
    if labels.size == 0:
        return {name: float("nan") for name in CREDIT_METRICS}
    both_classes = 0 < labels.sum() < labels.size
    return {
        "auc": roc_auc(labels, scores) if both_classes else float("nan"),
        "log_loss": log_loss(labels, scores),
        "brier": brier_score(labels, scores),
        "approval_rate": rate(approved),
        "expected_cost_per_applicant": expected_cost(
            labels, approved, costs["bad_approved"], costs["good_declined"]),
        "tpr": rate(approved, labels == 1),
        "fpr": rate(approved, labels == 0),
        "good_rate": float(labels.mean()),
    }


def credit_group_metrics(rows: list[dict], config: dict, statistics: dict) -> list[dict]:
    """Every credit figure of one (model version, window) group.

    Args:
        rows: joined rows of the group; those without a label count for drift only.
        config: the evaluation config (slices, costs, drift thresholds, min sizes).
        statistics: the model manifest's ``feature_statistics`` plus ``score`` (training
            score statistics) when known.

    Returns:
        Metric rows: counts, overall figures, calibration bins, per slice group its figures
        and gaps against the rest, and drift per feature.
    """
    costs = config.get("costs", {"bad_approved": 5.0, "good_declined": 1.0})
    approve = config.get("approve_decision", "approve")
    labelled = [r for r in rows if r.get("label") is not None]
    labels = np.asarray([r["label"] for r in labelled], dtype=int)
    scores = np.asarray([r["score"] for r in labelled], dtype=float)
    approved = np.asarray([r["decision"] == approve for r in labelled], dtype=bool)
    out = [metric("predictions", len(rows), len(rows)),
           metric("labelled", len(labelled), len(labelled))]
    versions: dict[str, int] = {}
    for r in rows:
        versions[r.get("rules_version")] = versions.get(r.get("rules_version"), 0) + 1
    for version, n in sorted(versions.items(), key=lambda kv: str(kv[0])):
        out.append(metric("rows_by_rules_version", n, n, detail=str(version)))
    for name, value in credit_scores(labels, scores, approved, costs).items():
        out.append(metric(name, value, len(labelled)))
    for b in calibration_table(labels, scores, config.get("calibration_bins", 10)):
        detail = f"{b['low']:.1f}-{b['high']:.1f}"
        out.append(metric("calibration_mean_score", b["mean_probability"], b["count"],
                          detail=detail))
        out.append(metric("calibration_observed_good", b["observed_rate"], b["count"],
                          detail=detail))

    min_size = config.get("min_slice_size", 30)
    min_class = config.get("min_class_count", 5)
    for dimension in config.get("slices", []):
        for group, member in group_members(dimension, labelled):
            gaps = fairness_gaps(labels, approved, member, min_size, min_class)
            flag = "small" if gaps["small"] else ("significant" if gaps["significant"]
                                                   else None)
            size = gaps["size"]
            out.append(metric("size", size, size, dimension["name"], group, flag=flag))
            figures = credit_scores(labels[member], scores[member], approved[member], costs)
            for name, value in figures.items():
                out.append(metric(name, value, size, dimension["name"], group, flag=flag))
            for name in ("approval_rate_ratio", "approval_rate_diff", "tpr_diff", "fpr_diff",
                         "approval_z"):
                out.append(metric(name, gaps[name], size, dimension["name"], group, flag=flag))

    columns = {name: [r.get(name) for r in rows if r.get(name) is not None]
               for name in statistics}
    out.extend(drift_metrics(statistics, columns, config.get("drift", {})))
    return out


def drift_metrics(statistics: dict, columns: dict, drift_config: dict) -> list[dict]:
    """Drift figures as metric rows (slice "drift", detail = feature)."""
    out = []
    report = drift_report(statistics, columns, drift_config.get("features", {}),
                          drift_config.get("default"))
    for item in report:
        for figure in ("psi", "linf", "js"):
            if figure in item:
                flag = "drifted" if figure in item["exceeded"] else None
                out.append(metric(figure, item[figure], item["count"], "drift", item["kind"],
                                  detail=item["feature"], flag=flag))
        for figure, limit in item["limits"].items():
            out.append(metric(f"{figure}_limit", limit, item["count"], "drift", item["kind"],
                              detail=item["feature"]))
            out.append(metric(f"{figure}_noise_floor", item["noise_floors"].get(figure),
                              item["count"], "drift", item["kind"], detail=item["feature"]))
    return out


# --- radar -------------------------------------------------------------------------------

def band_of(value: float, edges: list[float], unit: str) -> str:
    """The band label of ``value`` among increasing ``edges`` (e.g. "0-50km", "200+km")."""
    for low, high in zip(edges[:-1], edges[1:]):
        if low <= value < high:
            return f"{low:g}-{high:g}{unit}"
    return f"{edges[-1]:g}+{unit}"


def radar_group_metrics(rows: list[dict], config: dict, unpack) -> list[dict]:
    """POD, FAR and CSI of the removed (non-meteorological) class against truth masks.

    Args:
        rows: joined sweep rows; those without a truth mask are counted only.
        config: ``elevation_bands_deg`` and ``range_bands_km`` (band edges).
        unpack: ``(packed, shape) -> bool mask`` (the sampled rows' mask encoding).

    Returns:
        Metric rows overall, per sweep (slice "sweep", value = prediction id), per elevation
        band and per range band (hits, misses and false alarms summed before the ratios);
        ``count`` is the gates judged (hits + misses + false alarms).
    """
    elevation_edges = config.get("elevation_bands_deg", [0, 1, 2, 4, 8, 20])
    range_edges = config.get("range_bands_km", [0, 25, 50, 100, 200])
    labelled = [r for r in rows if r.get("truth_mask_packed") is not None]
    totals: dict[tuple, np.ndarray] = {}

    def add(slice_name, group, scores):
        totals.setdefault((slice_name, group), np.zeros(3, dtype=np.int64))
        totals[(slice_name, group)] += [scores["hits"], scores["misses"],
                                        scores["false_alarms"]]

    out = [metric("predictions", len(rows), len(rows)),
           metric("labelled", len(labelled), len(labelled))]
    for row in labelled:
        shape = tuple(row["mask_shape"])
        predicted = unpack(row["mask_packed"], shape)
        truth = unpack(row["truth_mask_packed"], tuple(row["truth_mask_shape"]))
        if truth.shape != predicted.shape:
            out.append(metric("shape_mismatch", 1, 1, "sweep", row["prediction_id"],
                              flag="skipped"))
            continue
        scores = detection_scores(truth, predicted)
        judged = scores["hits"] + scores["misses"] + scores["false_alarms"]
        for name in ("pod", "far", "csi"):
            out.append(metric(name, scores[name], judged, "sweep", row["prediction_id"],
                              detail=f"elevation {row['elevation']:.1f}"))
        add(ALL, ALL, scores)
        add("elevation_band", band_of(row["elevation"], elevation_edges, "deg"), scores)
        gate_km = _gate_ranges_km(row, shape[1])
        if gate_km is not None:
            gate_bands = np.asarray([band_of(r, range_edges, "km") for r in gate_km])
            for band in np.unique(gate_bands):
                columns = gate_bands == band
                add("range_band", str(band), detection_scores(truth[:, columns],
                                                              predicted[:, columns]))
    for (slice_name, group), (hits, misses, false_alarms) in sorted(totals.items()):
        gates = int(hits + misses + false_alarms)
        for name, value in _ratios(hits, misses, false_alarms).items():
            out.append(metric(name, value, gates, slice_name, group))
    return out


def _ratios(hits, misses, false_alarms) -> dict:
    def ratio(n, d):
        return float(n / d) if d else float("nan")
    return {"pod": ratio(hits, hits + misses), "far": ratio(false_alarms, hits + false_alarms),
            "csi": ratio(hits, hits + misses + false_alarms)}


def _gate_ranges_km(row: dict, n_gates: int):
    start, spacing = row.get("first_gate_m"), row.get("gate_spacing_m")
    if start is None or spacing is None:
        return None
    return (start + spacing * np.arange(n_gates)) / 1000.0
