"""Metric rows of one (model version, window) group of joined rows: binary credit decisions
(scores, costs, calibration, slices with fairness gaps, drift) and radar removal masks (POD,
FAR, CSI per sweep, elevation band and range band). Pure functions, plus the thin DoFn that
applies the evaluated capability's metric function to each group.
"""


import hashlib
import json

import apache_beam as beam
import numpy as np

from models import estimation
from models.calibration import apply_calibration
from models.metrics import (
    brier_score,
    calibration_table,
    detection_scores,
    expected_cost,
    log_loss,
    rate,
    roc_auc,
)
from models.radar_qc.vocabulary import unpack_mask
from models.slices import fairness_gaps, group_members
from transforms.evaluation.drift import drift_report
from transforms.evaluation.join import ALL, ESTIMATED, SERVED, keyed, metric

NOT_AVAILABLE = "not_available"


# --- credit ------------------------------------------------------------------------------

CREDIT_METRICS = ("auc", "log_loss", "brier", "accuracy", "approval_rate",
                  "expected_cost_per_applicant", "tpr", "fpr", "good_rate")
# The version's calibrator travels with its drift statistics (``pipelines.evaluate``).
CALIBRATION = "calibration"
# Labels count as complete for a window (its estimate's error is reported) from this share.
LABELS_COMPLETE = 0.9


def credit_scores(labels, scores, approved, costs: dict | None) -> dict:
    """The credit model's figures on labelled rows (NaN where undefined, e.g. AUC of one class,
    or the expected cost of a data set without error costs)."""
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
        "accuracy": rate(approved == labels.astype(bool)),
        "approval_rate": rate(approved),
        "expected_cost_per_applicant": expected_cost(
            labels, approved, costs["bad_approved"], costs["good_declined"])
        if costs else float("nan"),
        "tpr": rate(approved, labels == 1),
        "fpr": rate(approved, labels == 0),
        "good_rate": float(labels.mean()),
    }


def applicant_keys(rows: list[dict], fields: list[str]) -> list[str]:
    """One key per distinct applicant: a hash of the input fields (rows of a returning
    applicant or a replay share one outcome); the prediction id when no fields are known."""
    if not fields:
        return [r["prediction_id"] for r in rows]
    return [hashlib.sha256(json.dumps([r.get(f) for f in fields], default=str).encode())
            .hexdigest()[:16] for r in rows]


def estimated_rows(rows: list[dict], member, approved, probabilities, keys, costs,
                   realized: dict, calibrated: bool, slice_name: str = ALL,
                   group: str = ALL) -> list[dict]:
    """CBPE figures of the rows in ``member`` as metric rows of role ``estimated``: the point
    estimate (detail null), its interval (``interval_low`` / ``interval_high``) and, once at
    least ``LABELS_COMPLETE`` of the rows have labels, the realized figure minus the estimate
    (detail ``error``, flag ``inside`` / ``outside`` the interval). The approval rate needs no
    label: its "estimate" is the observed rate of every row, its interval a point."""
    member = np.asarray(member, dtype=bool)
    size = int(member.sum())
    if size == 0:
        return []
    scores = np.asarray([r["score"] for r in rows], dtype=float)[member]
    p, chosen = probabilities[member], approved[member]
    clusters = [k for k, m in zip(keys, member) if m]
    point = estimation.estimate(p, scores, chosen, clusters, costs)
    bounds = estimation.interval(p, scores, chosen, clusters, costs)
    labelled = sum(1 for r, m in zip(rows, member) if m and r.get("label") is not None)
    flag = "calibrated" if calibrated else "raw_scores"
    out = []
    for name in estimation.ESTIMATED_METRICS:
        if name == "expected_cost_per_applicant" and not costs:
            continue
        low, high = bounds[name]
        out += [dict(metric(name, point[name], size, slice_name, group, flag=flag),
                     role=ESTIMATED),
                dict(metric(name, low, size, slice_name, group, detail="interval_low"),
                     role=ESTIMATED),
                dict(metric(name, high, size, slice_name, group, detail="interval_high"),
                     role=ESTIMATED)]
        value = realized.get(name)
        complete = labelled >= LABELS_COMPLETE * size
        if name != "approval_rate" and complete and value is not None and np.isfinite(value) \
                and np.isfinite(point[name]):
            inside = np.isfinite(low) and low <= value <= high
            out.append(dict(metric(name, value - point[name], labelled, slice_name, group,
                                   detail="error", flag="inside" if inside else "outside"),
                            role=ESTIMATED))
    return out


def credit_group_metrics(rows: list[dict], config: dict, statistics: dict) -> list[dict]:
    """Every credit figure of one (model version, window) group.

    Args:
        rows: joined rows of the group; those without a label count for drift only.
        config: the evaluation config (``models.config.load_evaluation_config``) with ``costs``,
            the data set's error costs (None when unknown: cost figures are then flagged
            ``not_available``).
        statistics: the model manifest's ``feature_statistics`` plus ``score`` (training
            score statistics) and ``calibration`` (its calibrator) when known.

    Returns:
        Metric rows: counts, overall figures, calibration bins, per slice group its figures
        and gaps against the rest, and drift per feature; for the served version, the
        figures estimated from its scores before labels (``estimated_rows``) overall and per
        slice group, over every row of the group, labelled or not.
    """
    costs = config.get("costs")
    calibration = statistics.get(CALIBRATION)
    statistics = {k: v for k, v in statistics.items() if k != CALIBRATION}
    approve = config["approve_decision"]
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
    # The release without the commit: a retraining trigger fires on releases, not commits.
    releases: dict[str, int] = {}
    for r in rows:
        release = str(r.get("code_version") or "unknown").split("+", 1)[0]
        releases[release] = releases.get(release, 0) + 1
    for release, n in sorted(releases.items()):
        out.append(metric("rows_by_code_release", n, n, detail=release))
    overall = credit_scores(labels, scores, approved, costs)
    for name, value in overall.items():
        flag = NOT_AVAILABLE if name == "expected_cost_per_applicant" and not costs else None
        out.append(metric(name, value, len(labelled), flag=flag))
    served = bool(rows) and rows[0].get("role", SERVED) == SERVED
    if served:  # a shadow's answers are sampled beside the served ones: no estimate of its own
        every_approved = np.asarray([r["decision"] == approve for r in rows], dtype=bool)
        probabilities = apply_calibration(calibration, [r["score"] for r in rows])
        keys = applicant_keys(rows, sorted(k for k in statistics if k != "score"))
        calibrated = bool(calibration and calibration.get("used"))
        out += estimated_rows(rows, np.ones(len(rows), dtype=bool), every_approved,
                              probabilities, keys, costs, overall, calibrated)
    for b in calibration_table(labels, scores, config["calibration_bins"]):
        detail = f"{b['low']:.1f}-{b['high']:.1f}"
        out.append(metric("calibration_mean_score", b["mean_probability"], b["count"],
                          detail=detail))
        out.append(metric("calibration_observed_good", b["observed_rate"], b["count"],
                          detail=detail))

    min_size, min_class = config["min_slice_size"], config["min_class_count"]
    for dimension in config["slices"]:
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
        if served:
            # Estimates see every row of the group, labelled or not.
            for group, member in group_members(dimension, rows):
                figures = credit_scores(*_labelled_of(rows, member, approve), costs)
                out += estimated_rows(rows, member, every_approved, probabilities, keys, costs,
                                      figures, calibrated, dimension["name"], group)

    columns = {name: [r.get(name) for r in rows if r.get(name) is not None]
               for name in statistics}
    out.extend(drift_metrics(statistics, columns, config["drift"]))
    return out


def _labelled_of(rows: list[dict], member, approve: str):
    """(labels, scores, approved) of the labelled rows among ``member``."""
    chosen = [r for r, m in zip(rows, member) if m and r.get("label") is not None]
    return (np.asarray([r["label"] for r in chosen], dtype=int),
            np.asarray([r["score"] for r in chosen], dtype=float),
            np.asarray([r["decision"] == approve for r in chosen], dtype=bool))


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


def radar_group_metrics(rows: list[dict], config: dict, statistics: dict | None = None
                        ) -> list[dict]:
    """POD, FAR and CSI of the removed (non-meteorological) class against truth masks.

    Args:
        rows: joined sweep rows; those without a truth mask are counted only.
        config: ``elevation_bands_deg`` and ``range_bands_km`` (band edges).
        statistics: unused (radar drift is not measured here); the signature every
            capability's metric function shares.

    Returns:
        Metric rows overall, per sweep (slice "sweep", value = prediction id), per elevation
        band and per range band (hits, misses and false alarms summed before the ratios);
        ``count`` is the gates judged (hits + misses + false alarms).
    """
    elevation_edges = config["elevation_bands_deg"]
    range_edges = config["range_bands_km"]
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
        predicted = unpack_mask(row["mask_packed"], shape)
        truth = unpack_mask(row["truth_mask_packed"], tuple(row["truth_mask_shape"]))
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


class GroupMetricsFn(beam.DoFn):
    """All metrics of one (model, version, window) group, by the evaluated capability's metric
    function ``(rows, config, statistics of the version) -> metric rows``."""

    def __init__(self, pipeline: str, group_metrics, config: dict, statistics: dict, run: dict):
        self._pipeline = pipeline
        self._group_metrics = group_metrics
        self._config = config
        self._statistics = statistics
        self._run = run

    def process(self, element):
        key, rows = element
        # Grouped rows come in any order; sorted, sums (and so metrics) are the same to the
        # last bit on every runner.
        rows = sorted(rows, key=lambda r: r["prediction_id"])
        figures = self._group_metrics(rows, self._config, self._statistics.get(key[1], {}))
        yield from keyed(figures, key, self._pipeline, self._run)


class MonitorFn(beam.DoFn):
    """The figures watched without truth of one (model, version, monitored value) group, by the
    capability's monitoring function (``pipelines.capabilities``), keyed by their window."""

    def __init__(self, pipeline: str, monitoring, config: dict, window: str, run: dict):
        self._pipeline = pipeline
        self._monitoring = monitoring
        self._config = config
        self._window = window
        self._run = run

    def process(self, element):
        (model_name, model_version, _), rows = element
        rows = sorted(rows, key=lambda r: r["prediction_id"])
        for window, start, row in self._monitoring(rows, self._config, self._window):
            yield from keyed([row], (model_name, model_version, SERVED, window, start),
                             self._pipeline, self._run)
