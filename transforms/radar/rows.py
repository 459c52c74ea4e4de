"""The rows of the radar QC pipeline: sampled sweep predictions, the volume index, dead letters.
Pure functions; the pipeline module only wires them."""

import datetime

import numpy as np
import pyarrow as pa

from models.radar_qc.vocabulary import CLASS_NAMES, SYNTHETIC_MOMENTS, class_counts, pack_mask
from transforms.common.dead_letters import dead_letter
from transforms.common.parquet_sink import utc_date
from transforms.common.predictions import COMMON_FIELDS, predictions_schema
from transforms.radar.reading import ROLE_CHANNELS
from transforms.radar.volumes import SweepKey

MASK_ENCODING = ("numpy.packbits of the removal mask (1 = removed: biological or clutter/noise), "
                 "row-major (azimuth, range) on the model grid, big-endian bit order")

_SWEEP_FIELDS = (
    pa.field("volume_id", pa.string()),
    pa.field("radar", pa.string()),
    pa.field("volume_time", pa.timestamp("us", tz="UTC")),
    pa.field("sweep_number", pa.int32()),
    pa.field("elevation", pa.float64()),
    pa.field("source", pa.string()),
    pa.field("first_gate_m", pa.float64()),
    pa.field("gate_spacing_m", pa.float64()),
    # Inputs as the model saw them, summarised (the full sweep stays in the source volume);
    # null for a moment its model does not take or the sweep lacks.
    *(pa.field(f"mean_{c.lower()}", pa.float64()) for c in SYNTHETIC_MOMENTS),
    pa.field("gates_echo", pa.int64()),
    *(pa.field(f"gates_{name}", pa.int64()) for name in CLASS_NAMES),
    pa.field("fraction_removed", pa.float64()),
    # --check_uncertainty: the share of the sweep's echo where the UNet's call differs from
    # both reference algorithms' (null when not checked, or a single-pol sweep).
    pa.field("qc_uncertain_share", pa.float64()),
    pa.field("mask_shape", pa.list_(pa.int32())),
    pa.field("mask_encoding", pa.string()),
    pa.field("mask_packed", pa.binary()),
)
PREDICTION_SCHEMA = predictions_schema(*_SWEEP_FIELDS)

_COMMON = {f.name: f for f in COMMON_FIELDS}
# One row per QC'd volume: where its files are and what was done.
VOLUME_SCHEMA = pa.schema([
    pa.field("volume_id", pa.string(), nullable=False),
    pa.field("radar", pa.string()),
    # Where the radar id came from: "file metadata", "file name" (the file said nothing),
    # or "none" (the id is "unknown").
    pa.field("radar_id_from", pa.string()),
    pa.field("volume_time", pa.timestamp("us", tz="UTC")),
    pa.field("source", pa.string()),
    pa.field("netcdf", pa.string()),          # the CF/Radial 2 file (null if not written)
    pa.field("odim_h5", pa.string()),         # the ODIM_H5 file (--output_formats odim)
    pa.field("cfradial1", pa.string()),       # the CF/Radial 1.4 file (... cfradial1)
    pa.field("quicklook", pa.string()),
    pa.field("sweeps_total", pa.int32()),
    pa.field("sweeps_classified", pa.int32()),
    # The volume coverage pattern's number of cuts (NEXRAD message 5; null when the format
    # does not say), and whether every one of them arrived whole.
    pa.field("sweeps_expected", pa.int32()),
    pa.field("complete", pa.bool_()),
    # What was wrong with the file's cuts, one sentence each ("cut 5 (2.42 deg) lost: compressed
    # record 26 of 46 (byte 1,972,033) is corrupt (bzip2: Invalid data stream)"); null when
    # nothing was.
    pa.field("damaged_cuts", pa.string()),
    # Sweeps the single-polarization model classified (legacy / single-pol sweeps), and it.
    pa.field("sweeps_single_pol", pa.int32()),
    pa.field("single_pol_model", pa.string()),
    pa.field("fraction_removed", pa.float64()),
    # --check_uncertainty: the share of the dual-pol sweeps' echo where the UNet's call
    # differs from both reference algorithms', and whether it is above the configured share
    # (null when not checked, or no dual-pol sweep).
    pa.field("qc_uncertain_share", pa.float64()),
    pa.field("qc_uncertain", pa.bool_()),
    *(_COMMON[name] for name in ("processed_at", "model_name", "model_version", "model_sha256",
                                 "code_version", "run_mode", "run_id", "latency_ms", "dt")),
])
VOLUME_PARTITIONS = ("radar", "dt")


def sweep_row(key: SweepKey, moments: np.ndarray, classes: np.ndarray, model_id: str,
              context: dict, now: datetime.datetime | None = None,
              uncertain_share: float | None = None) -> dict:
    """One sweep's prediction with everything needed to score it later against a truth mask.

    Args:
        key: the sweep's key.
        moments: the float32 (azimuth, range, channel) input the model saw.
        classes: the model's per-gate classes.
        model_id: model path reported by RunInference (carries the version).
        context: run constants: pipeline, run_mode, run_id, code_version, and ``models``
            mapping each model path to (name, version, sha256).
        now: processing time (default: now, UTC).
        uncertain_share: the "QC uncertain" share of the sweep's echo (--check_uncertainty).
    """
    now = now or datetime.datetime.now(datetime.UTC)
    name, version, sha256 = context["models"][model_id]
    counts = class_counts(classes)
    channels = ROLE_CHANNELS[key.role]
    means = {f"mean_{c.lower()}": (_nan_mean(moments[..., channels.index(c)])
                                   if c in channels else None) for c in SYNTHETIC_MOMENTS}
    return {
        "prediction_id": key.prediction_id,
        "event_time": key.volume_time,
        "processed_at": now,
        "pipeline": context["pipeline"],
        "run_mode": context["run_mode"],
        "run_id": context["run_id"],
        "model_name": name,
        "model_version": version,
        "model_sha256": sha256,
        "code_version": context["code_version"],
        "latency_ms": (now - key.decoded_at).total_seconds() * 1000.0,
        "dt": utc_date(key.volume_time),
        "volume_id": key.volume_id,
        "radar": key.radar,
        "volume_time": key.volume_time,
        "sweep_number": key.sweep_number,
        "elevation": key.elevation,
        "source": key.origin,
        "first_gate_m": key.first_gate_m,
        "gate_spacing_m": key.gate_spacing_m,
        **means,
        "gates_echo": counts["echo"],
        **{f"gates_{n}": counts[n] for n in CLASS_NAMES},
        "fraction_removed": counts["fraction_removed"],
        "qc_uncertain_share": uncertain_share,
        "mask_shape": list(classes.shape),
        "mask_encoding": MASK_ENCODING,
        "mask_packed": pack_mask(classes),
    }


def _nan_mean(values: np.ndarray) -> float | None:
    finite = values[~np.isnan(values)]
    return float(finite.mean()) if finite.size else None


def volume_row(key: SweepKey, paths: dict, sweeps_total: int, fraction_removed: float,
               model: tuple[str, str, str], context: dict,
               now: datetime.datetime | None = None,
               sweeps_expected: int | None = None, sweeps_single_pol: int = 0,
               single_pol_model: str | None = None, damaged_cuts: str | None = None,
               radar_id_from: str | None = None,
               uncertainty: tuple[float, bool] | None = None) -> dict:
    """The index row of one QC'd volume; ``complete`` is False when fewer sweeps were found
    than its coverage pattern has (a volume cut short), None when that count is unknown.
    ``model`` is the dual-pol model when it classified any sweep, else the single-pol one."""
    now = now or datetime.datetime.now(datetime.UTC)
    name, version, sha256 = model
    return {
        "volume_id": key.volume_id,
        "radar": key.radar,
        "radar_id_from": radar_id_from,
        "volume_time": key.volume_time,
        "source": key.origin,
        "netcdf": paths.get("netcdf"),
        "odim_h5": paths.get("odim_h5"),
        "cfradial1": paths.get("cfradial1"),
        "quicklook": paths["quicklook"],
        "sweeps_total": sweeps_total,
        "sweeps_classified": key.qc_sweeps,
        "sweeps_expected": sweeps_expected,
        "complete": None if sweeps_expected is None else sweeps_total >= sweeps_expected,
        "damaged_cuts": damaged_cuts or None,
        "sweeps_single_pol": sweeps_single_pol,
        "single_pol_model": single_pol_model,
        "fraction_removed": fraction_removed,
        "qc_uncertain_share": uncertainty[0] if uncertainty else None,
        "qc_uncertain": uncertainty[1] if uncertainty else None,
        "processed_at": now,
        "model_name": name,
        "model_version": version,
        "model_sha256": sha256,
        "code_version": context["code_version"],
        "run_mode": context["run_mode"],
        "run_id": context["run_id"],
        "latency_ms": (now - key.decoded_at).total_seconds() * 1000.0,
        "dt": utc_date(key.volume_time),
    }


def volume_dead_letter(key: SweepKey, stage: str, error, context: dict,
                       error_class: str | None = None) -> dict:
    """A volume that did not make it, referenced by its source paths (no raw bytes)."""
    return dead_letter(pipeline=context["pipeline"], stage=stage, error=error,
                       error_class=error_class, raw=None, origin=key.origin,
                       run_id=context["run_id"])
