"""Radar QC watched without truth: each radar and tilt against the radar's own reference
period; the configuration checked; the alert rule and its words."""

import datetime
import json

import pytest

from models.config import ConfigError, load_evaluation_config
from transforms.evaluation.radar_monitoring import radar_monitoring, reference_rows
from transforms.evaluation.retraining import check_rule, evidence_sentence

START = datetime.datetime(2026, 6, 1, 12, tzinfo=datetime.UTC)


def _sweep(day: int, elevation: float, removed: int, dbzh: float, radar="KXYZ", n=0) -> dict:
    return {"prediction_id": f"{radar}-{day:02d}-{elevation}-{n}", "radar": radar,
            "volume_time": START + datetime.timedelta(days=day, minutes=n), "elevation": elevation,
            "gates_echo": 1000, "gates_meteorological": 1000 - removed,
            "gates_biological": removed // 2, "gates_clutter_noise": removed - removed // 2,
            "mean_dbzh": dbzh, "mean_zdr": 0.3, "mean_rhohv": 0.97}


def _rows():
    rows = []
    for day in range(10):  # 0-6 the reference week; from day 7 the low tilt removes more
        for n in range(3):
            late = day >= 7
            rows.append(_sweep(day, 0.5, 300 if late else 100 + 10 * n, 30.0 + n + (8 if late
                                                                               else 0), n=n))
            rows.append(_sweep(day, 1.5, 50, 25.0 + n, n=n))
    return rows


def _by(out, window_start, metric, detail):
    [row] = [r for w, s, r in out if s == window_start and r["metric"] == metric
             and r["detail"] == detail]
    return row


def test_each_window_against_the_radars_own_first_week_tilt_by_tilt():
    rows = _rows()
    assert len(reference_rows(rows, {"reference_days": 7})) == 7 * 6
    out = radar_monitoring(rows, {}, "day")
    assert {r["slice"] for _, _, r in out} == {"radar"}
    assert {r["slice_value"] for _, _, r in out} == {"KXYZ"}
    # Reference week: the share removed is its own reference, nothing flagged.
    first = _by(out, "2026-06-01", "removed_share_change", "tilt 0.5")
    assert first["flag"] is None
    assert _by(out, "2026-06-01", "removed_share_reference", "tilt 0.5")["value"] == \
        pytest.approx(110 / 1000)
    # Day 8: the low tilt removes 30 % against 11 %: shifted; the upper tilt did not move.
    late = _by(out, "2026-06-08", "removed_share_change", "tilt 0.5")
    assert late["value"] == pytest.approx(0.30 - 0.11) and late["flag"] == "shifted"
    assert _by(out, "2026-06-08", "removed_share_change", "tilt 1.5")["flag"] is None
    assert _by(out, "2026-06-08", "class_share_biological", "tilt 0.5")["value"] == \
        pytest.approx(0.15)
    # DBZH 8 dB up on the low tilt: over 3 reference standard deviations (sd 0.83 dB, floor 1 dB).
    shift = _by(out, "2026-06-08", "mean_dbzh_shift", "tilt 0.5")
    assert shift["value"] == pytest.approx(8.0 / 1.0) and shift["flag"] == "drifted"
    assert _by(out, "2026-06-08", "mean_zdr_shift", "tilt 0.5")["flag"] is None
    assert _by(out, "all", "sweeps", "all tilts")["value"] == len(rows)
    # Too few sweeps on a side: figures shown, not flagged.
    sparse = radar_monitoring(rows, {"monitoring": {"min_sweeps": 4}}, "day")
    assert _by(sparse, "2026-06-08", "removed_share_change", "tilt 0.5")["flag"] is None
    # Configured reference dates instead of the first days.
    dated = radar_monitoring(rows, {"monitoring": {"reference_from": "2026-06-08"}}, "day")
    assert _by(dated, "2026-06-08", "removed_share_change", "tilt 0.5")["value"] == \
        pytest.approx(0.0)


def test_the_qc_uncertain_share_is_watched_where_the_run_checked_it():
    rows = _rows()
    for r in rows:  # day 8 on, the low tilt's call differs from both references far more often
        r["qc_uncertain_share"] = 0.20 if r["elevation"] == 0.5 and r["volume_time"].day >= 8 \
            else 0.04
    out = radar_monitoring(rows, {}, "day")
    assert _by(out, "2026-06-01", "qc_uncertain_share", "tilt 0.5")["value"] == \
        pytest.approx(0.04)
    late = _by(out, "2026-06-08", "qc_uncertain_share_change", "tilt 0.5")
    assert late["value"] == pytest.approx(0.16) and late["flag"] == "shifted"
    assert _by(out, "2026-06-08", "qc_uncertain_share_change", "tilt 1.5")["flag"] is None
    # Runs without --check_uncertainty have no such rows.
    assert not [r for _, _, r in radar_monitoring(_rows(), {}, "day")
                if r["metric"].startswith("qc_uncertain")]


def test_the_monitoring_section_is_checked(tmp_path):
    path = tmp_path / "radar.json"
    for bad, words in (({"reference_days": 0}, "monitoring.reference_days must be a number"),
                       ({"reference_from": "June"}, "monitoring.reference_from must be a date"),
                       ({"moment_sd_floor": {"DBZH": -1}}, "moment_sd_floor")):
        path.write_text(json.dumps({"version": "1", "monitoring": bad}))
        with pytest.raises(ConfigError, match=words):
            load_evaluation_config(str(path))


def test_the_monitoring_rule_alerts_with_the_radars_and_tilts_that_moved():
    rows = [r for _, s, r in radar_monitoring(_rows(), {}, "day") if s == "2026-06-08"]
    now = datetime.datetime(2026, 6, 9, tzinfo=datetime.UTC)
    shares = check_rule({"name": "removed_share_shift", "type": "monitoring",
                         "metrics": ["removed_share_change"], "action": "alert"}, rows, {}, now,
                        None)
    assert shares["fired"] and [(f["radar"], f["tilt"]) for f in
                                shares["evidence"]["flagged"]] == [("KXYZ", "tilt 0.5")]
    assert evidence_sentence(shares) == ("1 flagged against their radar's reference: KXYZ "
                                         "tilt 0.5 removed_share_change 0.19.")
    moments = check_rule({"name": "m", "type": "monitoring", "metrics": ["mean_*_shift"]},
                         rows, {}, now, None)
    assert moments["fired"] and {f["metric"] for f in moments["evidence"]["flagged"]} == {
        "mean_dbzh_shift"}
    quiet = [r for _, s, r in radar_monitoring(_rows(), {}, "day") if s == "2026-06-02"]
    assert not check_rule({"name": "q", "type": "monitoring", "metrics": ["*"]}, quiet, {}, now,
                          None)["fired"]
