"""Radar QC against reference algorithms: the references, the agreement figures, weak labels,
the cross-radar split and the report."""

import os

import numpy as np
import pytest

from models.radar_qc.vocabulary import MET, NO_ECHO, NON_MET
from transforms.radar import reference
from transforms.radar.reference import ReferenceParameters, agreement_rows, summed
from transforms.radar.reference_report import write_reference_report
from transforms.radar.weak_labels import (
    consensus_labels,
    parse_arguments,
    weak_training_windows,
    weak_windows,
)


def test_agreement_rows_on_a_hand_made_sweep():
    # One ray of 8 gates, the first 4 within 25 km, the rest beyond.
    echo = np.array([[1, 1, 1, 1, 1, 1, 1, 0]], dtype=bool)
    unet = np.array([[1, 1, 0, 0, 1, 0, 0, 0]], dtype=bool)
    fuzzy = np.array([[1, 0, 1, 0, 1, 1, 0, 0]], dtype=bool)
    rhohv = np.array([[1, 0, 1, 1, 1, 0, 0, 0]], dtype=bool)
    range_km = np.array([5.0, 10, 15, 20, 30, 35, 40, 45])
    rows = agreement_rows({"volume_id": "V", "sweep_number": 0}, {
        "unet": unet, "fuzzy": fuzzy, "rhohv": rhohv}, echo, range_km, [0, 25])
    by = {(r["band"], r["detected"], r["reference"]): r for r in rows}
    # Consensus over echo gates where fuzzy == rhohv: gates 0, 1, 2, 4, 6; removed at 0, 2, 4.
    whole = by[("all", "unet", "consensus")]
    assert (whole["gates"], whole["hits"], whole["misses"], whole["false_alarms"]) == (5, 2, 1, 1)
    assert whole["csi"] == pytest.approx(0.5)
    assert whole["weather_removed_share"] == pytest.approx(0.5)  # gate 1 of gates 1 and 6
    assert whole["removed_share"] == pytest.approx(3 / 7)
    refs = by[("all", "fuzzy", "rhohv")]
    assert (refs["hits"], refs["misses"], refs["false_alarms"]) == (3, 1, 1)
    near = by[("0-25 km", "unet", "consensus")]  # gates 0, 1, 2 agree; removed 0, 2
    assert (near["hits"], near["misses"], near["false_alarms"]) == (1, 1, 1)
    assert by[(">25 km", "unet", "rhohv")]["echo_gates"] == 3
    total = summed([by[("0-25 km", "unet", "consensus")], by[(">25 km", "unet", "consensus")]])
    assert (total["hits"], total["misses"], total["false_alarms"]) == (2, 1, 1)
    assert total["weather_removed_share"] == pytest.approx(0.5)


def test_references_on_a_small_real_sweep(klbb_path):
    """The RHOHV rule is the threshold itself; the fuzzy mask is wradlib's membership below the
    threshold, computed by wradlib on the same moments."""
    from wradlib.classify import classify_echo_fuzzy, filter_gabella

    from transforms.radar.reading import open_volume, volume_sweeps

    sweeps, _ = volume_sweeps(open_volume(klbb_path))
    data = sweeps[0].data[:64, :160]  # 32 degrees, out to 42 km
    velocity = np.where(np.isnan(data[..., 0]), np.nan, 0.0).astype(np.float32)
    params = ReferenceParameters(0.5, 0.8)
    masks = reference.reference_masks(data, velocity, params)
    echo = ~np.isnan(data[..., 0])
    assert echo.sum() > 2000
    np.testing.assert_array_equal(masks["rhohv"], echo & (data[..., 2] < 0.8))
    clutter = filter_gabella(np.where(echo, data[..., 0], -32.0), **params.gabella)
    membership, _ = classify_echo_fuzzy({"zdr": data[..., 1], "rho": data[..., 2],
                                         "phi": data[..., 3], "dop": velocity,
                                         "map": clutter.astype(float)})
    np.testing.assert_array_equal(masks["fuzzy"], echo & (membership < 0.5))
    # At 0 m/s everywhere the Doppler membership says "clutter": more is removed than with
    # velocity left out.
    without = reference.reference_masks(data, None, params)
    assert masks["fuzzy"].sum() > without["fuzzy"].sum()


def test_threshold_tuning_maximises_the_references_agreement_within_bounds():
    rng = np.random.default_rng(0)
    membership = rng.random((10, 50))
    rhohv = membership * 0.4 + 0.6  # RHOHV < r  <=>  membership < (r - 0.6) / 0.4
    echo = np.ones_like(membership, dtype=bool)
    tuned = reference.tune_thresholds([(membership, rhohv, echo)])
    # Perfect agreement where (r - 0.6) / 0.4 == f: f 0.5 and r 0.8 on the grids.
    assert (tuned["fuzzy_threshold"], tuned["rhohv_threshold"]) == (0.5, 0.8)
    assert tuned["csi"] == pytest.approx(1.0)


def test_weak_labels_keep_only_the_references_consensus():
    echo = np.array([[1, 1, 1, 1, 0]], dtype=bool)
    fuzzy = np.array([[1, 0, 1, 0, 0]], dtype=bool)
    rhohv = np.array([[1, 0, 0, 1, 0]], dtype=bool)
    labels = consensus_labels({"fuzzy": fuzzy, "rhohv": rhohv}, echo)
    assert labels.tolist() == [[NON_MET, MET, NO_ECHO, NO_ECHO, NO_ECHO]]
    sweep = np.arange(16 * 32 * 4, dtype=np.float32).reshape(16, 32, 4)
    data, cut = weak_windows([(sweep, np.zeros((16, 32), np.uint8))], 5, 8, 16, seed=1)
    assert data.shape == (5, 8, 16, 4) and cut.shape == (5, 8, 16)
    # Each window is a block of the sweep: consecutive rays (wrapping), consecutive gates.
    rays = data[..., 0, 0] // (32 * 4)
    assert np.all((np.diff(rays, axis=1) % 16) == 1)


def test_weak_label_training_defaults_and_refusals(klbb_path, capsys):
    args = parse_arguments(["--weak_labels", klbb_path, "--train_windows", "300"])
    assert args.weak_labels == [(klbb_path,)]
    # Twice as many real windows as synthetic ones, and more epochs than synthetic-only.
    assert (args.weak_windows, args.epochs) == (600, 8)
    assert parse_arguments(["--weak_labels", klbb_path, "--weak_windows", "50",
                            "--epochs", "2"]).weak_windows == 50
    for argv, words in ((["--weak_labels", "/nowhere/KXXX"], "--weak_labels"),
                        (["--weak_labels", klbb_path, "--polarization", "single"],
                         "weak labels come from dual-pol references"),
                        (["--weak_labels", klbb_path, "--weak_windows", "-1"],
                         "a count of windows")):
        with pytest.raises(SystemExit) as exit_:
            parse_arguments(argv)
        assert exit_.value.code == 2
        assert words in capsys.readouterr().err


def test_the_weak_label_loss_is_cross_entropy_and_takes_non_weather():
    from models.radar_qc.model import weak_label_loss

    p = np.array([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3], [0.5, 0.25, 0.25]], dtype=np.float32)
    labels = np.array([0, 2, 3])
    loss = np.asarray(weak_label_loss(labels, p))
    np.testing.assert_allclose(loss, [-np.log(0.7), -np.log(0.3), -np.log(0.5)], rtol=1e-5)


def test_the_report_shows_every_table_and_escapes_names(tmp_path):
    rows = []
    for volume, detected_removes in (("KLBB-1", [1, 1, 0, 0]), ("<b>X</b>", [0, 0, 1, 1])):
        masks = {"unet": np.array([detected_removes], bool),
                 "fuzzy": np.array([[1, 0, 1, 0]], bool), "rhohv": np.array([[1, 0, 1, 1]], bool)}
        for row in agreement_rows({"volume_id": volume, "radar": "R", "sweep_number": 0,
                                   "elevation": 0.5}, masks, np.ones((1, 4), bool),
                                  np.array([5.0, 10, 30, 60]), [0, 25, 50]):
            rows.append({**row, "model_name": "radar_qc", "model_version": "v0003",
                         "run_id": "r1", "source": "s", "figure": f"{volume}.png"})
    path = write_reference_report(rows, str(tmp_path), ReferenceParameters(), [0, 25, 50])
    page = open(path, encoding="utf-8").read()
    assert "radar_qc v0003" in page and "UNet vs consensus" in page
    assert "fuzzy vs RHOHV rule" in page and "25-50 km" in page and "&gt;50 km" in page
    assert "<b>X</b>" not in page and "&lt;b&gt;X&lt;/b&gt;" in page
    assert page.count("<h3>") == 2  # one figure per volume
    assert "It learnt from synthetic sweeps only." in page
    page = open(write_reference_report(rows, str(tmp_path), ReferenceParameters(), [0],
                                       ["KLOT-20260328T201457Z"]), encoding="utf-8").read()
    assert "It learnt from the reference consensus of KLOT-20260328T201457Z" in page


@pytest.mark.slow
def test_no_volume_is_scored_by_a_model_trained_on_its_weak_labels(klbb_path, tmp_path):
    """Weak labels from KLBB train the model; the reference job then scores the KLOT volume
    and refuses KLBB, in words."""
    import pyarrow.dataset as pads

    from models.radar_qc.train import train
    from pipelines import radar_reference
    from tests.conftest import KLOT_CHUNKS

    registry = str(tmp_path / "registry")
    ref = train(registry, seed=3, train_windows=24, holdout_windows=2, epochs=1,
                command="pytest", weak=weak_training_windows([(klbb_path,)], 24, seed=3))
    assert ref.manifest["weak_label_volumes"] == ["KLBB-20160601T150025Z"]
    out = tmp_path / "out"
    outcome = radar_reference.run(["--registry", registry, "--output", str(out), "--input",
                                   klbb_path, "--chunk_volumes", str(KLOT_CHUNKS)])
    assert {r["volume_id"] for r in outcome["rows"]} == {"KLOT-20260328T201457Z"}
    dead = pads.dataset(str(out / "dead_letters"), partitioning="hive").to_table().to_pylist()
    assert [(d["stage"], d["origin"]) for d in dead] == [("reference", klbb_path)]
    assert "trained on its weak labels" in dead[0]["message"]
    assert os.path.exists(outcome["report"])
    page = open(outcome["report"], encoding="utf-8").read()
    assert "KLOT-20260328T201457Z" in page
    # KLBB is named once, as what the model learnt from, and scored nowhere.
    assert "reference consensus of KLBB-20160601T150025Z" in page
    assert page.count("KLBB-20160601T150025Z") == 1


def test_the_evaluation_report_shows_the_newest_reference_comparison(tmp_path):
    """The radar evaluation report (against truth) carries the real volumes' figures of the
    newest reference run of the same model, with a link to its page."""
    import json

    from transforms.evaluation.outcome import EvaluationRun, latest_reference
    from transforms.evaluation.report import reference_section

    masks = {"unet": np.array([[1, 1, 0, 0]], bool), "fuzzy": np.array([[1, 0, 1, 0]], bool),
             "rhohv": np.array([[1, 0, 1, 1]], bool)}
    rows = [{**r, "model_name": "radar_qc", "model_version": "v0002", "run_id": "ref-1",
             "source": "s", "figure": None}
            for r in agreement_rows({"volume_id": "KLBB-1", "radar": "KLBB", "sweep_number": 0,
                                     "elevation": 0.5}, masks, np.ones((1, 4), bool),
                                    np.array([5.0, 10, 30, 60]), [0])]
    folder = tmp_path / "evaluation" / "reports" / "radar_qc" / "radar_qc"
    write_reference_report(rows, str(folder / "reference-ref-1"), ReferenceParameters(), [0])
    assert json.loads((folder / "reference-ref-1" / "summary.json").read_text())["run_id"] == \
        "ref-1"
    run = EvaluationRun(pipeline="radar_qc", model_name="radar_qc", run_id="e1",
                        output=str(tmp_path), registry="r", predictions="p", truth="t",
                        filters={}, config="c", retraining_rules=None, history_metrics=())
    found = latest_reference(str(tmp_path), run)
    assert found["link"] == "../reference-ref-1/index.html"
    section = reference_section(found)
    assert "model v0002" in section and "UNet vs consensus" in section
    assert "href='../reference-ref-1/index.html'" in section
    assert latest_reference(str(tmp_path / "elsewhere"), run) is None
