"""Evaluation of sampled predictions against late ground truth: joining, windows, metric rows.

Pure functions over plain rows, and the thin DoFn of the join; ``pipelines/evaluate.py`` only
wires them.

A metric row (``METRIC_SCHEMA``) is one figure for one (model version, window, slice): metric
history accumulates as Parquet, one file per evaluation run, and charts by a plain
``GROUP BY metric, window_start`` in DuckDB or BigQuery.
"""

import base64
import datetime
import math

import apache_beam as beam
import pyarrow as pa

ALL = "all"
WINDOWS = ("week", "day", "all")
# Whose answers a metric row scores: the version that served the requests, or a shadow version
# that scored the same requests beside it (its answers only in the sampled rows).
SERVED, SHADOW = "served", "shadow"
# A figure estimated from the served version's scores before the labels (models.estimation).
ESTIMATED = "estimated"
METRICS = "metrics"

METRIC_SCHEMA = pa.schema([
    pa.field("evaluation_run_id", pa.string()),
    pa.field("evaluated_at", pa.timestamp("us", tz="UTC")),
    pa.field("pipeline", pa.string()),
    pa.field("model_name", pa.string()),
    pa.field("model_version", pa.string()),
    pa.field("role", pa.string()),            # "served", "shadow" (same rows, its answers)
                                              # or "estimated" (served, before labels)
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


def shadow_views(row: dict) -> list[dict]:
    """A joined row as its served version answered it, and, when a shadow version scored the
    same request, as the shadow answered it (its version, score and decision; role "shadow"),
    so both are evaluated on the same rows with the same metrics, slices and drift."""
    served = dict(row, role=SERVED)
    if row.get("shadow_model_version") is None or row.get("shadow_score") is None:
        return [served]
    shadow = dict(row, role=SHADOW, model_version=row["shadow_model_version"],
                  model_sha256=row.get("shadow_model_sha256"), score=row["shadow_score"],
                  decision=row["shadow_decision"])
    return [served, shadow]


def served_rows(rows: list[dict]) -> list[dict]:
    """Metric rows of the versions that served (what retraining decisions judge)."""
    return [r for r in rows if r.get("role") in (None, SERVED)]


def version_label(row: dict) -> str:
    """A metric row's version as the report shows it: ``v0002 (shadow)`` for a shadow's,
    ``v0001 (estimated)`` for the figures estimated before labels."""
    role = row.get("role")
    return row["model_version"] + (f" ({role})" if role in (SHADOW, ESTIMATED) else "")


def group_keys(row: dict, window: str) -> list[tuple]:
    """The (model_name, model_version, role, window, window_start) groups a row counts in: the
    whole period always, and its day or week unless ``window`` is "all"."""
    base = (row["model_name"], row["model_version"], row.get("role", SERVED))
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
    """Add the group and run columns to metric rows (a row's own ``role``, e.g. estimated,
    stands)."""
    model_name, model_version, role, window, start = key
    return [{"evaluation_run_id": run["run_id"], "evaluated_at": run["evaluated_at"],
             "pipeline": pipeline, "model_name": model_name, "model_version": model_version,
             "role": role, "window": window, "window_start": start, **row} for row in rows]


JOIN_COUNTS = ("matched", "predictions_unmatched", "truth_unmatched", "truth_duplicates",
               "prediction_duplicates")


def join_count_row(name: str, count: int, pipeline: str, model_name: str, run: dict) -> dict:
    """One of the join's counts as a metric row (slice "join"); zero counts have no row."""
    figure = metric(name, count, count, "join", ALL)
    return keyed([figure], (model_name, ALL, SERVED, ALL, ALL), pipeline, run)[0]


class JoinFn(beam.DoFn):
    """One prediction id's co-grouped predictions and truth -> the joined row + join counts."""

    def process(self, element):
        prediction_id, grouped = element
        row, counts = resolve_join(prediction_id, list(grouped["predictions"]),
                                   list(grouped["truth"]))
        for name, count in counts.items():
            if count:
                yield beam.pvalue.TaggedOutput("counts", (name, count))
        if row is not None:
            yield row
