"""Radar QC watched without truth: per radar and tilt, the share of echo removed, the class mix
and the input moments of each window against a reference period of the same radar's own
volumes. Pure functions over sampled sweep rows.

Real volumes have no per-gate truth, and the model's training statistics come from synthetic
and weak-label windows, so they are no baseline for real data: each radar is its own baseline.
The reference period is the radar's first ``reference_days`` days of sampled sweeps in the
evaluated data (or ``reference_from`` / ``reference_to`` in the configuration); every window
(the reference's included, so the charts show it) is compared with it, tilt by tilt (elevation
to 0.1 degree: a tilt's clutter and beam height are its own).

Figures (metric rows of slice ``radar``, the radar as slice value, ``detail`` the tilt or "all
tilts"): ``sweeps``; ``removed_share`` (removed gates over echo gates), its reference and
``removed_share_change`` (flag ``shifted`` beyond ``removed_share_change`` with at least
``min_sweeps`` sweeps on both sides); ``qc_uncertain_share`` (where the run checked it:
``beamline radar qc --check_uncertainty``), its reference and change (flag ``shifted`` beyond
``uncertain_share_change``); ``class_share_<class>``; per input moment the mean of the
sweep means, its reference and ``mean_<moment>_shift`` in units of the reference's sweep-to-sweep
standard deviation (never below the moment's floor in ``moment_sd_floor``; flag ``drifted``
beyond ``moment_shift_sd``). A sweep mean moves with the weather as much as with the radar, so a
moment shift asks a person to look (a calibration change, a new clutter source, a season); it is
not a verdict.
"""

import datetime

import numpy as np

from models.radar_qc.vocabulary import CLASS_NAMES, SYNTHETIC_MOMENTS
from transforms.evaluation.join import ALL, metric, window_start

RADAR = "radar"
ALL_TILTS = "all tilts"
DEFAULTS = {"reference_days": 7, "min_sweeps": 3, "removed_share_change": 0.10,
            "uncertain_share_change": 0.05, "moment_shift_sd": 3.0,
            "moment_sd_floor": {"DBZH": 1.0, "ZDR": 0.1, "RHOHV": 0.005, "PHIDP": 2.0,
                                "VRADH": 0.5, "WRADH": 0.2}}
_REMOVED = [name for name in CLASS_NAMES if name != "meteorological"]


# What the figures read of a sampled sweep row: grouped without the masks, so a radar's whole
# history fits one worker.
FIELDS = ("prediction_id", "radar", "volume_time", "event_time", "elevation", "gates_echo",
          *(f"gates_{name}" for name in CLASS_NAMES),
          *(f"mean_{moment.lower()}" for moment in SYNTHETIC_MOMENTS), "qc_uncertain_share")


def monitored_fields(row: dict) -> dict:
    """A sampled sweep row cut to ``FIELDS``."""
    return {name: row.get(name) for name in FIELDS}


def monitoring_config(config: dict) -> dict:
    """The ``monitoring`` section of an evaluation configuration over the defaults."""
    given = config.get("monitoring") or {}
    return {**DEFAULTS, **given,
            "moment_sd_floor": {**DEFAULTS["moment_sd_floor"], **given.get("moment_sd_floor", {})}}


def tilt_of(elevation) -> str:
    return f"tilt {float(elevation):.1f}"


def _day(row) -> datetime.date:
    when = row.get("volume_time") or row["event_time"]
    return when.astimezone(datetime.UTC).date()


def reference_rows(rows: list[dict], settings: dict) -> list[dict]:
    """The sweeps of the reference period (configured dates, else the first days seen)."""
    if settings.get("reference_from") or settings.get("reference_to"):
        low = datetime.date.fromisoformat(settings.get("reference_from") or "0001-01-01")
        high = datetime.date.fromisoformat(settings.get("reference_to") or "9999-12-31")
        return [r for r in rows if low <= _day(r) < high]
    if not rows:
        return []
    first = min(_day(r) for r in rows)
    end = first + datetime.timedelta(days=settings["reference_days"])
    return [r for r in rows if _day(r) < end]


def figures(rows: list[dict]) -> dict:
    """Summed gate counts and sweep-mean moments of some sweeps."""
    echo = sum(r.get("gates_echo") or 0 for r in rows)
    out = {"sweeps": len(rows), "echo": echo,
           "removed_share": (sum(r.get(f"gates_{c}") or 0 for r in rows for c in _REMOVED)
                             / echo) if echo else None}
    for name in CLASS_NAMES:
        out[f"class_share_{name}"] = (sum(r.get(f"gates_{name}") or 0 for r in rows) / echo
                                      if echo else None)
    checked = [r for r in rows if r.get("qc_uncertain_share") is not None]
    weight = sum(r.get("gates_echo") or 0 for r in checked)
    out["qc_uncertain_share"] = (sum(r["qc_uncertain_share"] * (r.get("gates_echo") or 0)
                                     for r in checked) / weight) if weight else None
    out["checked_sweeps"] = len(checked)
    for moment in SYNTHETIC_MOMENTS:
        values = np.asarray([r[f"mean_{moment.lower()}"] for r in rows
                             if r.get(f"mean_{moment.lower()}") is not None], dtype=float)
        values = values[np.isfinite(values)]
        out[moment] = (float(values.mean()), float(values.std(ddof=1)) if values.size > 1
                       else None, int(values.size)) if values.size else None
    return out


def compare(now: dict, reference: dict, settings: dict, radar: str, detail: str) -> list[dict]:
    """Metric rows of one window's figures against the reference's."""
    enough = (now["sweeps"] >= settings["min_sweeps"]
              and reference["sweeps"] >= settings["min_sweeps"])
    out = [metric("sweeps", now["sweeps"], now["sweeps"], RADAR, radar, detail=detail),
           metric("removed_share", now["removed_share"], now["echo"], RADAR, radar,
                  detail=detail),
           metric("removed_share_reference", reference["removed_share"], reference["echo"],
                  RADAR, radar, detail=detail)]
    if now["removed_share"] is not None and reference["removed_share"] is not None:
        change = now["removed_share"] - reference["removed_share"]
        shifted = enough and abs(change) > settings["removed_share_change"]
        out.append(metric("removed_share_change", change, now["sweeps"], RADAR, radar,
                          detail=detail, flag="shifted" if shifted else None))
    if now["qc_uncertain_share"] is not None:
        out.append(metric("qc_uncertain_share", now["qc_uncertain_share"],
                          now["checked_sweeps"], RADAR, radar, detail=detail))
        if reference["qc_uncertain_share"] is not None:
            change = now["qc_uncertain_share"] - reference["qc_uncertain_share"]
            shifted = (now["checked_sweeps"] >= settings["min_sweeps"]
                       and reference["checked_sweeps"] >= settings["min_sweeps"]
                       and abs(change) > settings["uncertain_share_change"])
            out += [metric("qc_uncertain_share_reference", reference["qc_uncertain_share"],
                           reference["checked_sweeps"], RADAR, radar, detail=detail),
                    metric("qc_uncertain_share_change", change, now["checked_sweeps"], RADAR,
                           radar, detail=detail, flag="shifted" if shifted else None)]
    for name in CLASS_NAMES:
        out.append(metric(f"class_share_{name}", now[f"class_share_{name}"], now["echo"], RADAR,
                          radar, detail=detail))
    for moment in SYNTHETIC_MOMENTS:
        seen, base = now[moment], reference[moment]
        if seen is None:
            continue
        key = f"mean_{moment.lower()}"
        out.append(metric(key, seen[0], seen[2], RADAR, radar, detail=detail))
        if base is None:
            continue
        out.append(metric(f"{key}_reference", base[0], base[2], RADAR, radar, detail=detail))
        spread = max(base[1] or 0.0, settings["moment_sd_floor"].get(moment, 0.0))
        if spread > 0:
            shift = (seen[0] - base[0]) / spread
            drifted = enough and abs(shift) > settings["moment_shift_sd"]
            out.append(metric(f"{key}_shift", shift, seen[2], RADAR, radar, detail=detail,
                              flag="drifted" if drifted else None))
    return out


def radar_monitoring(rows: list[dict], config: dict, window: str) -> list[tuple[str, str, dict]]:
    """Every window's monitoring rows of one radar's sweeps (one model version).

    Args:
        rows: sampled sweep rows of one radar and model version.
        config: the evaluation configuration (its ``monitoring`` section, else the defaults).
        window: "day", "week" or "all" (the whole period only).

    Returns:
        (window, window start, metric row) triples.
    """
    if not rows:
        return []
    settings = monitoring_config(config)
    radar = rows[0].get("radar") or "unknown"
    reference = reference_rows(rows, settings)
    groups: dict[tuple, list] = {(ALL, ALL): rows}
    if window != ALL:
        for r in rows:
            when = r.get("volume_time") or r["event_time"]
            groups.setdefault((window, window_start(when, window)), []).append(r)
    out = []
    for (name, start), members in sorted(groups.items()):
        tilts = sorted({tilt_of(r["elevation"]) for r in members})
        pairs = [(ALL_TILTS, members, reference)] + [
            (tilt, [r for r in members if tilt_of(r["elevation"]) == tilt],
             [r for r in reference if tilt_of(r["elevation"]) == tilt]) for tilt in tilts]
        for detail, now, base in pairs:
            for row in compare(figures(now), figures(base), settings, radar, detail):
                out.append((name, start, row))
    return out
