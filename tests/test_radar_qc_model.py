"""Synthetic sweeps and their truth, skill metrics, the UNet export and its handler."""

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
    assert manifest["training_command"] == "pytest fixture"


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


def test_handler_classifies_a_keyed_batch(radar_model_ref, synthetic):
    from models.radar_qc.handler import radar_model_handler

    handler = radar_model_handler(radar_model_ref.path, max_batch_size=2)
    assert handler.batch_elements_kwargs()["max_batch_size"] == 2
    model = handler.load_model()
    batch = [("a", synthetic[0][0]), ("b", synthetic[0][1])]
    results = list(handler.run_inference(batch, model))
    assert [key for key, _ in results] == ["a", "b"]
    for (_, sweep), (_, result) in zip(batch, results):
        assert result.inference.dtype == np.uint8
        assert result.inference.shape == sweep.shape[:2]
        assert result.example is sweep


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
    native = native_classes(grid, np.array([5.1, 5.4, 181.0, 359.9]), n_gates=1900)
    assert native.shape == (4, 1900)
    assert (native[0, :1840] == BIO).all() and (native[1, :1840] == BIO).all()
    assert (native[2:, :1840] == MET).all()
    assert (native[:, 1840:] == NO_ECHO).all()  # beyond the grid: not classified
