"""Leave one radar out: the Heidke skill score, radar-balanced windows, finding the shared
volumes, scoring a held-out radar and the command's refusals (no training here: the experiment
itself is a command with recorded results, docs/radar.md)."""

import dataclasses
import os

import numpy as np
import pytest

from models.metrics import heidke_skill_score
from models.radar_qc.vocabulary import CLUTTER, MET, NO_ECHO, protect_weather
from tests.conftest import DATA_DIR
from transforms.radar import reference
from transforms.radar.leave_one_radar_out import (
    Recipe,
    markdown,
    parse_arguments,
    radar_summary,
    score_sweeps,
)
from transforms.radar.reading import volume_paths
from transforms.radar.weak_labels import LabelledSweep, consensus_labels, weak_windows


def test_heidke_skill_score_is_kappa_of_the_table():
    # Independent: observed agreement against the agreement expected from the marginals.
    a, b, c, d = 40, 10, 5, 945  # hits, false alarms, misses, correct negatives
    n = a + b + c + d
    observed = (a + d) / n
    expected = ((a + b) * (a + c) + (c + d) * (b + d)) / n ** 2
    assert heidke_skill_score(a, c, b, d) == pytest.approx((observed - expected)
                                                           / (1 - expected))
    assert heidke_skill_score(10, 0, 0, 90) == pytest.approx(1.0)
    # A forecast independent of the truth has no skill.
    assert heidke_skill_score(25, 25, 25, 25) == pytest.approx(0.0)
    assert np.isnan(heidke_skill_score(0, 0, 0, 10))


def test_summed_hss_counts_echo_gates_not_empty_ones():
    echo = np.array([[1, 1, 1, 1, 1, 1, 0, 0]], dtype=bool)
    unet = np.array([[1, 1, 0, 0, 0, 0, 0, 0]], dtype=bool)
    both = np.array([[1, 0, 1, 0, 0, 0, 0, 0]], dtype=bool)
    rows = reference.agreement_rows({"volume_id": "V"}, {"unet": unet, "fuzzy": both,
                                                         "rhohv": both},
                                    echo, np.arange(8.0), [0])
    consensus = reference.summed([r for r in rows if r["band"] == "all"
                                  and r["reference"] == "consensus"])
    # 6 echo gates: 1 hit, 1 false alarm, 1 miss, 3 correct negatives (the 2 empty gates
    # would make it 5 and the score higher).
    assert consensus["hss"] == pytest.approx(heidke_skill_score(1, 1, 1, 3))
    assert consensus["hss"] < heidke_skill_score(1, 1, 1, 5)


def test_radar_balanced_windows_draw_each_radar_alike():
    many = [(np.full((16, 32, 4), 1.0, np.float32), np.zeros((16, 32), np.uint8))] * 9
    one = [(np.full((16, 32, 4), 2.0, np.float32), np.zeros((16, 32), np.uint8))]
    sweeps = many + one
    groups = ["KAAA"] * 9 + ["KBBB"]
    uniform, _ = weak_windows(sweeps, 400, 8, 16, seed=3)
    balanced, _ = weak_windows(sweeps, 400, 8, 16, seed=3, groups=groups)
    assert np.mean(uniform[:, 0, 0, 0] == 2.0) == pytest.approx(0.1, abs=0.05)
    assert np.mean(balanced[:, 0, 0, 0] == 2.0) == pytest.approx(0.5, abs=0.08)


RAYS = 130  # more than the seam padding takes from each side


def _sweep(radar, volume, dbzh, fuzzy, rhohv):
    def rays(values, dtype):
        return np.tile(np.asarray(values, dtype=dtype)[None, :], (RAYS, 1))

    dbzh = rays(dbzh, np.float32)
    data = np.stack([dbzh, np.zeros_like(dbzh), np.ones_like(dbzh), np.zeros_like(dbzh)], -1)
    masks = {"fuzzy": rays(fuzzy, bool), "rhohv": rays(rhohv, bool)}
    return LabelledSweep(radar, volume, 0, 0.5, data, masks,
                         consensus_labels(masks, ~np.isnan(dbzh)),
                         np.array([5.0, 10, 30, 40, 60, 70, 80, 90]))


def _first_four_removed(moments):
    """An engine that removes the first four gates of every ray."""
    p = np.zeros(moments.shape[:-1] + (3,), np.float32)
    p[..., MET] = 1.0
    p[..., :, :4, MET] = 0.0
    p[..., :, :4, CLUTTER] = 1.0
    return p


def test_a_held_out_radar_is_scored_against_the_references():
    """An engine that removes the first four gates: every figure follows from the masks."""
    nan = np.nan
    sweep = _sweep("KXXX", "KXXX-1", [10, 10, 10, 10, 10, 10, 10, nan],
                   [1, 1, 0, 0, 1, 0, 0, 0], [1, 0, 0, 1, 1, 0, 0, 0])
    rows = score_sweeps(_first_four_removed, [sweep], [0, 25, 50])
    summary = radar_summary(rows)
    c = summary["consensus"]
    # Agreed echo gates 0, 2, 4, 5, 6 (both remove 0 and 4); the UNet removes 0..3.
    assert (c["hits"], c["misses"], c["false_alarms"]) == (RAYS, RAYS, RAYS)
    assert c["weather_removed_share"] == pytest.approx(1 / 3)  # gate 2 of 2, 5, 6
    assert c["hss"] == pytest.approx(heidke_skill_score(1, 1, 1, 2))
    # The UNet differs from both references at gate 2 (both keep) and gate 4 (both remove).
    assert summary["uncertain_share"] == pytest.approx(2 / 7)
    assert summary["uncertain_share_by_volume"] == {"KXXX-1": pytest.approx(2 / 7)}
    assert set(summary["bands"]) == {"0-25 km", "25-50 km", ">50 km"}
    assert summary["bands"]["0-25 km"]["csi"] == pytest.approx(1.0)  # gate 0 only agreed
    assert summary["fuzzy"]["csi"] == pytest.approx(2 / 5)
    result = {"recipe": dataclasses.asdict(Recipe("r", 1, 2, 3)), "cpus": 2, "started_at": "t",
              "folds": {"KXXX": {**summary, "train_seconds": 60.0,
                                 "synthetic_holdout_csi": 0.99}}}
    table = markdown(result)
    assert "| KXXX | 1 | 1 |" in table and "**33.3%**" in table and "0-25 km" in table


def test_the_weather_safety_rule_keeps_strong_coherent_echo():
    """The same engine, scored with the rule: gates 0 and 2 (30 dBZ, RHOHV 1) are kept."""
    nan = np.nan
    sweep = _sweep("KXXX", "KXXX-1", [30, 10, 30, 10, 10, 10, 10, nan],
                   [1, 1, 0, 0, 1, 0, 0, 0], [1, 0, 0, 1, 1, 0, 0, 0])
    plain = radar_summary(score_sweeps(_first_four_removed, [sweep], [0, 25, 50]))["consensus"]
    safe = radar_summary(score_sweeps(_first_four_removed, [sweep], [0, 25, 50],
                                      safety=(20.0, 0.95)))["consensus"]
    assert (plain["hits"], plain["misses"], plain["false_alarms"]) == (RAYS, RAYS, RAYS)
    assert (safe["hits"], safe["misses"], safe["false_alarms"]) == (0, 2 * RAYS, 0)
    assert plain["weather_removed_share"] == pytest.approx(1 / 3)
    assert safe["weather_removed_share"] == 0.0
    # Weak or incoherent echo, and empty gates, are left as classified.
    classes = np.array([[CLUTTER, CLUTTER, CLUTTER, NO_ECHO]], np.uint8)
    moments = np.zeros((1, 4, 4), np.float32)
    moments[..., 0] = [30, 30, 10, nan]
    moments[..., 2] = [0.99, 0.80, 0.99, nan]
    assert protect_weather(classes, moments, 20, 0.95).tolist() == [[MET, CLUTTER, CLUTTER,
                                                                      NO_ECHO]]


def test_the_shared_volumes_are_found_chunk_sets_as_one():
    folder = DATA_DIR / "radar"
    if not folder.exists():
        pytest.skip(f"real data not found at {folder}")
    found = volume_paths(str(folder))
    names = [os.path.basename(p) for p in found]
    assert "nexrad_chunks_KLOT" in names and "KLBB20160601_150025_V06" in names
    assert "KTLX20190715_120037_V06" in names and not any(n.startswith("README") for n in names)
    assert not any(n.endswith("-S") or n.endswith("-I") for n in names)  # no chunk alone
    assert len(found) == 2 + len([n for n in os.listdir(folder / "network")
                                  if not n.startswith("README")])


def test_the_command_refuses_bad_arguments(tmp_path, capsys):
    for argv, words in ((["--data", str(tmp_path / "none")], "is not a folder"),
                        (["--data", str(tmp_path), "--epochs", "0"], "--epochs: a count"),
                        (["--data", str(tmp_path), "--weather_safety", "20"], "two numbers"),
                        (["--data", str(tmp_path), "--weather_safety", "20,9"], "not in (0, 1]")):
        with pytest.raises(SystemExit) as exit_:
            parse_arguments(argv)
        assert exit_.value.code == 2
        assert words in capsys.readouterr().err


def test_weak_labels_leave_out_volumes_without_dual_pol_sweeps(capsys):
    from transforms.radar.reading import RadarReadError
    from transforms.radar.weak_labels import weak_training_windows

    legacy = DATA_DIR / "radar" / "network" / "KABR20050101_000745.gz"
    if not legacy.exists():
        pytest.skip(f"real data not found at {legacy}")
    with pytest.raises(RadarReadError, match="no volume given has a dual-pol sweep"):
        weak_training_windows([(str(legacy),)], 4, seed=1)
    assert "left out KABR20050101_000745.gz: " in capsys.readouterr().out
