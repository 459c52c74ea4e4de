"""Synthetic sweeps and their truth, skill metrics, the UNet export and its handler."""

import pathlib

import numpy as np
import pytest

from models.metrics import detection_scores
from models.radar_qc.synthetic import BIO, CLUTTER, MET, NO_ECHO, sensitivity_dbz, synthetic_set
from models.radar_qc.train import non_meteorological, rhohv_rule, tune_rhohv_threshold
from models.radar_qc.vocabulary import CHANNELS, class_counts, pack_mask, unpack_mask
from transforms.radar.volumes import native_classes

DBZH, ZDR, RHOHV, PHIDP = range(4)


@pytest.fixture(scope="module")
def synthetic():
    return synthetic_set(seed=11, count=40)


def test_generator_is_seeded(synthetic):
    data, labels = synthetic_set(seed=11, count=40)
    np.testing.assert_array_equal(labels, synthetic[1])
    np.testing.assert_array_equal(data, synthetic[0])


def test_truth_matches_the_fields(synthetic):
    data, labels = synthetic
    echo = labels != NO_ECHO
    # No echo means no measurement in any channel, and every echo gate has all four.
    assert np.isnan(data[~echo]).all()
    assert not np.isnan(data[echo]).any()
    assert {MET, BIO, CLUTTER} <= set(np.unique(labels[echo]).tolist())
    met, bio = labels == MET, labels == BIO
    # Rain: ZDR 0-3 dB (plus noise), RHOHV high except in the melting layer and at low SNR.
    assert 0.0 <= np.median(data[..., ZDR][met]) <= 3.0
    assert np.median(data[..., RHOHV][met]) > 0.97
    # Birds and insects: high, noisy ZDR and low RHOHV.
    assert np.median(data[..., ZDR][bio]) > 2.0 and np.std(data[..., ZDR][bio]) > 1.5
    assert np.median(data[..., RHOHV][bio]) < 0.8
    assert np.nanmax(data[..., PHIDP]) < 360.0 and np.nanmin(data[..., PHIDP]) >= 0.0


def test_echo_gates_exceed_the_radar_sensitivity():
    from models.radar_qc.synthetic import synthetic_sweep

    data, labels = synthetic_sweep(np.random.default_rng(3), 64, 128, first_gate=40)
    ranges_km = (40 + np.arange(128) + 0.5) * 0.25
    floor = np.broadcast_to(sensitivity_dbz(ranges_km), labels.shape)
    echo = labels != NO_ECHO
    assert (data[..., DBZH][echo] > floor[echo]).all()


def test_detection_scores_on_a_hand_computed_case():
    truth = np.array([1, 1, 1, 0, 0, 0, 1, 0], dtype=bool)
    detected = np.array([1, 1, 0, 1, 0, 0, 0, 0], dtype=bool)
    scores = detection_scores(truth, detected)  # hits 2, misses 2, false alarms 1
    assert scores["pod"] == pytest.approx(0.5)
    assert scores["far"] == pytest.approx(1 / 3)
    assert scores["csi"] == pytest.approx(0.4)


def test_rhohv_rule_threshold_is_tuned_for_csi(synthetic):
    data, labels = synthetic
    threshold = tune_rhohv_threshold(data, labels)
    assert 0.5 <= threshold < 0.97
    echo = labels != NO_ECHO

    def csi(t):
        return detection_scores(non_meteorological(labels[echo]),
                                rhohv_rule(data, t)[echo])["csi"]

    assert csi(threshold) >= max(csi(threshold - 0.1), csi(threshold + 0.02))


def test_manifest_reports_unet_and_rule_skill(radar_model_ref):
    manifest = radar_model_ref.manifest
    metrics = manifest["holdout_metrics"]
    for name in ("unet", "rhohv_rule"):
        assert {"pod", "far", "csi", "hits", "misses", "false_alarms"} <= set(metrics[name])
        assert 0.0 <= metrics[name]["csi"] <= 1.0
    assert manifest["input_schema"]["moments"]["channels"] == list(CHANNELS)
    assert set(manifest["feature_statistics"]) == set(CHANNELS)
    assert manifest["training_command"].startswith("python -m models.radar_qc.train --registry ")
    assert "randomise=False" in manifest["training_data"]


def test_export_round_trip_gives_the_same_classes(radar_model_ref, synthetic):
    import keras

    from models.radar_qc import model as radar_model

    loaded = keras.models.load_model(radar_model_ref.path)
    data = synthetic[0][:2]
    first = radar_model.predict_classes(loaded, data)
    again = radar_model.predict_classes(keras.models.load_model(radar_model_ref.path), data)
    np.testing.assert_array_equal(first, again)
    assert first.shape == data.shape[:-1]
    assert (first[np.isnan(data[..., 0])] == NO_ECHO).all()
    assert set(np.unique(first).tolist()) <= {MET, BIO, CLUTTER, NO_ECHO}


@pytest.mark.parametrize("engine", ["onnx", "tensorflow"])
def test_handler_classifies_one_volume_per_element_in_bounded_calls(radar_model_ref, synthetic,
                                                                     engine):
    from models.radar_qc.handler import radar_model_handler

    handler = radar_model_handler(radar_model_ref.path, radar_model_ref.manifest, engine,
                                  sweeps_per_call=2)
    assert handler.batch_elements_kwargs()["max_batch_size"] == 1
    model = handler.load_model()
    volume = synthetic[0][:5]  # five sweeps: calls of 2, 2 and 1
    [(key, result)] = list(handler.run_inference([("vol", volume)], model))
    assert key == "vol" and result.example is volume
    assert result.model_id == radar_model_ref.path  # names the version, whatever the engine
    assert result.inference.dtype == np.uint8 and result.inference.shape == volume.shape[:3]
    assert (result.inference[np.isnan(volume[..., 0])] == NO_ECHO).all()


def test_onnx_and_keras_give_identical_masks_on_the_real_volume(radar_model_ref, klbb_path):
    """The CPU engine classifies the gates of every real sweep as the Keras model does: the
    two engines' float32 kernels round differently, so a gate whose two classes tie to the
    last bits may flip (one in 11.9 million seen once); nothing more."""
    import keras
    import onnxruntime as ort

    from models.radar_qc.engine import onnx_model
    from models.radar_qc.handler import classify_sweeps, keras_probabilities, onnx_probabilities
    from transforms.radar.reading import open_volume
    from transforms.radar.volumes import decode_volume

    moments = decode_volume(open_volume(klbb_path), (klbb_path,)).stacks["dual_pol"]
    session = ort.InferenceSession(onnx_model(radar_model_ref.path, radar_model_ref.manifest),
                                   providers=["CPUExecutionProvider"])
    by_onnx = classify_sweeps(onnx_probabilities(session), moments)
    by_keras = classify_sweeps(keras_probabilities(keras.models.load_model(
        radar_model_ref.path)), moments)
    assert moments.shape[0] == 9 and by_onnx.shape == by_keras.shape
    assert np.count_nonzero(by_onnx != by_keras) <= 1e-6 * by_keras.size


def test_the_seam_at_north_is_continuous(radar_model_ref, klbb_path):
    """Rotating a sweep rotates its classes: with the circular padding no ray is classified
    differently for lying next to north (without it, rays there see a zero-padded edge)."""
    import keras

    from models.radar_qc.handler import classify_sweeps, keras_probabilities
    from transforms.radar.reading import open_volume
    from transforms.radar.volumes import decode_volume

    moments = decode_volume(open_volume(klbb_path), (klbb_path,)).stacks["dual_pol"]
    lowest = moments[:1]
    engine = keras_probabilities(keras.models.load_model(radar_model_ref.path))
    turn = 352  # 176 degrees; a multiple of 16 keeps the UNet's pooling grid aligned
    rotated = np.roll(lowest, turn, axis=1)

    def seam_disagreement(seam_rays):
        straight = classify_sweeps(engine, lowest, seam_rays=seam_rays)
        turned = classify_sweeps(engine, rotated, seam_rays=seam_rays)
        changed = np.roll(straight, turn, axis=1) != turned
        echo = ~np.isnan(rotated[..., 0])
        return changed[echo].mean()

    with_seam, without = seam_disagreement(64), seam_disagreement(0)
    assert with_seam <= 0.001 and with_seam < without


def test_a_tampered_onnx_export_is_refused_naming_the_version(radar_model_ref, tmp_path):
    import shutil

    from models.radar_qc.engine import EngineError, onnx_model

    folder = tmp_path / "v0001"
    shutil.copytree(pathlib.Path(radar_model_ref.path).parent, folder)
    keras_file = str(folder / "model.keras")
    assert onnx_model(keras_file, radar_model_ref.manifest).endswith("onnx/model.onnx")
    with open(folder / "onnx" / "model.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(EngineError, match="radar_qc v0001: .* does not match the sha256"):
        onnx_model(keras_file, radar_model_ref.manifest)
    old = {k: v for k, v in radar_model_ref.manifest.items() if k != "exports"}
    with pytest.raises(EngineError, match="radar_qc v0001 has no ONNX export"):
        onnx_model(keras_file, old)


def test_masks_pack_and_unpack_exactly():
    classes = np.random.default_rng(0).choice([MET, BIO, CLUTTER, NO_ECHO], size=(720, 1840))
    packed = pack_mask(classes)
    assert len(packed) == 720 * 1840 // 8
    mask = unpack_mask(packed, classes.shape)
    np.testing.assert_array_equal(mask, (classes == BIO) | (classes == CLUTTER))
    counts = class_counts(classes)
    assert counts["echo"] == int(np.sum(classes != NO_ECHO))
    assert counts["fraction_removed"] == pytest.approx(mask.sum() / counts["echo"])


def test_grid_classes_map_back_to_native_rays_and_gates():
    grid = np.zeros((720, 1840), dtype=np.uint8)
    grid[10] = BIO  # the cell centred on 5.25 degrees
    ranges = 2125.0 + 250.0 * np.arange(1900)
    native = native_classes(grid, np.array([5.1, 5.4, 181.0, 359.9]), ranges)
    assert native.shape == (4, 1900)
    assert (native[0, :1840] == BIO).all() and (native[1, :1840] == BIO).all()
    assert (native[2:, :1840] == MET).all()
    assert (native[:, 1840:] == NO_ECHO).all()  # beyond the grid: not classified


def test_gates_of_any_spacing_go_to_the_grid_and_back():
    from transforms.radar.reading import grid_gates, range_indices

    # 1 km gates from 1 km: each covers four 250 m grid gates; the grid reaches 460.75 km.
    coarse = 1000.0 + 1000.0 * np.arange(300)
    grid, nearest = range_indices(coarse)
    assert grid[0] == 1000.0 and grid[1] == 1250.0
    assert list(nearest[:9]) == [0, 0, 0, 1, 1, 1, 1, 2, 2]  # a tie goes to the gate below
    assert (nearest[grid > coarse[-1] + 500.0] == -1).all() and nearest[1196] == 299
    assert list(grid_gates(coarse)[:3]) == [0, 4, 8]
    # NEXRAD's own 250 m gates map one to one, both ways.
    fine = 2125.0 + 250.0 * np.arange(1832)
    assert (range_indices(fine)[1][:1832] == np.arange(1832)).all()
    assert (grid_gates(fine) == np.arange(1832)).all()



def test_domain_randomisation_adds_what_real_radars_show_and_keeps_the_plain_windows(
        synthetic):
    from models.radar_qc.synthetic import synthetic_sweep

    data, labels = synthetic_set(seed=11, count=40, randomise=True)
    again, again_labels = synthetic_set(seed=11, count=40, randomise=True)
    np.testing.assert_array_equal(data, again)
    np.testing.assert_array_equal(labels, again_labels)
    # The plain windows are drawn exactly as before randomisation existed.
    np.testing.assert_array_equal(synthetic_set(seed=11, count=40)[0], synthetic[0])
    assert not np.array_equal(labels, synthetic[1])

    plain, randomised = [], []
    for seed in range(12):  # whole rays from the radar out to 128 km
        plain.append(synthetic_sweep(np.random.default_rng(seed), 64, 512))
        randomised.append(synthetic_sweep(np.random.default_rng(seed), 64, 512,
                                          domain_rng=np.random.default_rng([seed, 2])))
    range_km = (np.arange(512) + 0.5) * 0.25

    def gates(windows, label, where):
        return sum(int((where(d, range_km[None, :]) & (lab == label)).sum())
                   for d, lab in windows)

    def anomalous_propagation(d, r):
        return (r > 50.0) & (d[..., DBZH] > 20.0)

    def clear_air(d, r):
        return (r < 30.0) & (d[..., DBZH] < 5.0) & (d[..., RHOHV] > 0.95)

    def noise_corrected(d, r):
        return d[..., RHOHV] > 1.0

    # Strong clutter far beyond the usual clutter ring (anomalous propagation).
    assert gates(plain, CLUTTER, anomalous_propagation) == 0
    assert gates(randomised, CLUTTER, anomalous_propagation) > 300
    # Weak, highly correlated weather near the radar (clear-air return) is kept as weather.
    assert gates(randomised, MET, clear_air) > 2 * gates(plain, MET, clear_air)
    # Noise-corrected RHOHV exceeds 1 at low SNR; the plain radar biases it low instead.
    assert gates(randomised, MET, noise_corrected) > 2 * gates(plain, MET, noise_corrected)


# --- the single-polarization model (legacy and single-pol volumes) ---

def test_doppler_moments_keep_the_same_windows_and_follow_their_physics():
    from models.radar_qc.vocabulary import SINGLE_POL_CHANNELS, SYNTHETIC_MOMENTS

    dual, dual_labels = synthetic_set(seed=11, count=40)
    every, labels = synthetic_set(seed=11, count=40, channels=SYNTHETIC_MOMENTS)
    single, single_labels = synthetic_set(seed=11, count=40, channels=SINGLE_POL_CHANNELS)
    # Same windows and truth whatever the channels: the two models are scored alike.
    np.testing.assert_array_equal(dual_labels, labels)
    np.testing.assert_array_equal(single_labels, labels)
    np.testing.assert_array_equal(dual, every[..., :4])
    np.testing.assert_array_equal(single, every[..., [0, 4, 5]])
    velocity, width = every[..., 4], every[..., 5]
    echo = labels != NO_ECHO
    assert np.isnan(velocity[~echo]).all()
    # Some echo has no Doppler measurement (surveillance-only scans, beyond Doppler range).
    assert 0.0 < np.isnan(velocity[echo]).mean() < 0.8
    measured = echo & ~np.isnan(velocity)
    assert (np.abs(velocity[measured]) <= 32.0).all()  # folded at the Nyquist velocity
    met, bio = measured & (labels == MET), measured & (labels == BIO)
    assert np.median(width[bio]) > np.median(width[met]) + 1.0
    with pytest.raises(ValueError, match="the synthetic generator has no KDP"):
        synthetic_set(seed=1, count=1, channels=("DBZH", "KDP"))


def test_single_pol_preprocessing_tells_missing_velocity_from_zero():
    from models.radar_qc.model import SweepPreprocessing, feature_count

    layer = SweepPreprocessing(("DBZH", "VRADH", "WRADH"))
    gates = np.array([[[[30.0, 0.0, 1.0], [30.0, np.nan, np.nan], [np.nan, np.nan, np.nan]]]],
                     dtype=np.float32)
    features = np.asarray(layer(gates))
    assert features.shape[-1] == feature_count(("DBZH", "VRADH", "WRADH")) == 6
    # dbzh, velocity, width, velocity present, width present, echo
    np.testing.assert_allclose(features[0, 0, 0], [1.0, 0.0, -1 / 3, 1.0, 1.0, 1.0], atol=1e-6)
    np.testing.assert_allclose(features[0, 0, 1], [1.0, 0.0, 0.0, 0.0, 0.0, 1.0], atol=1e-6)
    np.testing.assert_allclose(features[0, 0, 2], 0.0)
    # The dual-pol layer keeps the features its published versions were trained on.
    assert feature_count(CHANNELS) == 6
    assert SweepPreprocessing().get_config()["channels"] == list(CHANNELS)


def test_single_pol_model_is_registered_with_its_channels_and_skill(radar_registry):
    from models import registry

    dual = registry.resolve(radar_registry, "radar_qc")
    single = registry.resolve(radar_registry, "radar_qc_single")
    assert single.manifest["input_schema"]["moments"]["channels"] == ["DBZH", "VRADH", "WRADH"]
    assert single.manifest["polarization"] == "single"
    assert "rhohv_rule" not in single.manifest["holdout_metrics"]
    # Scored on the same hold-out windows as the dual-pol model (same set, same echo gates).
    assert single.manifest["holdout_metrics"]["set"] == dual.manifest["holdout_metrics"]["set"]
    assert (single.manifest["holdout_metrics"]["unet"]["echo_gates"]
            == dual.manifest["holdout_metrics"]["unet"]["echo_gates"])
    assert 0.0 < single.manifest["holdout_metrics"]["unet"]["csi"] <= 1.0
    assert set(single.manifest["feature_statistics"]) == {"DBZH", "VRADH", "WRADH"}
    assert single.manifest["exports"]["onnx"]["files"]
