"""The credit model: preprocessing inside, raw fields in, the exported model equal to memory."""

import keras
import numpy as np
import pytest

from models.credit.handler import CreditInference, credit_model_handler
from models.credit.model import build_credit_model, predict_scores
from models.credit.train import stratified_split
from models.metrics import accuracy, log_loss, roc_auc
from tests.conftest import german_dataset

GERMAN = german_dataset()
KINDS = GERMAN.kinds


def test_auc_and_log_loss_on_hand_computed_cases():
    # Pairs (pos, neg): (0.9,0.1) win, (0.9,0.4) win, (0.35,0.1) win, (0.35,0.4) loss -> 3/4.
    assert roc_auc([1, 0, 1, 0], [0.9, 0.1, 0.35, 0.4]) == pytest.approx(0.75)
    assert roc_auc([1, 0], [0.5, 0.5]) == pytest.approx(0.5)  # ties count one half
    assert log_loss([1, 0], [0.8, 0.2]) == pytest.approx(-np.log(0.8))
    assert accuracy([1, 0, 1], [0.9, 0.7, 0.2], 0.5) == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="both classes"):
        roc_auc([1, 1], [0.2, 0.3])


def test_split_is_stratified_and_seeded(german_records):
    _, labels = german_records
    train_a, hold_a = stratified_split(labels, 0.2, seed=1)
    train_b, hold_b = stratified_split(labels, 0.2, seed=1)
    assert np.array_equal(hold_a, hold_b)
    assert len(hold_a) == 200 and not set(train_a) & set(hold_a)
    assert labels[hold_a].mean() == pytest.approx(labels.mean(), abs=0.005)


def test_model_takes_raw_fields_and_handles_unknown_codes(german_records):
    records, _ = german_records
    model = build_credit_model(records[:200], GERMAN)
    assert set(model.input) == set(GERMAN.field_names)  # named raw inputs, nothing engineered
    unknown = dict(records[0], purpose="A499", checking_status="ZZZ")
    scores = predict_scores(model, [records[0], unknown], KINDS)
    assert scores.shape == (2,) and np.all((scores > 0) & (scores < 1))
    assert list(KINDS.values()).count("numeric") == 7
    assert list(KINDS.values()).count("categorical") == 13


def test_exported_model_scores_exactly_like_the_trained_one(credit_model_ref, german_records):
    records, labels = german_records
    loaded = keras.models.load_model(credit_model_ref.path)
    manifest = credit_model_ref.manifest
    scores = predict_scores(loaded, records, KINDS)
    # The manifest's hold-out AUC was computed in memory before export; the loaded model on
    # the same rows gives the same number.
    _, holdout = stratified_split(labels, manifest["split"]["holdout_fraction"], manifest["seed"])
    assert roc_auc(labels[holdout], scores[holdout]) == pytest.approx(
        manifest["holdout_metrics"]["auc"], abs=1e-6)
    assert manifest["holdout_metrics"]["auc"] > 0.7


def test_manifest_has_schema_metrics_and_training_statistics(credit_model_ref):
    manifest = credit_model_ref.manifest
    assert [f["name"] for f in manifest["input_schema"]] == list(GERMAN.field_names)
    assert manifest["dataset"]["model_name"] == "credit_german"
    assert manifest["dataset"]["costs"] == {"bad_approved": 5.0, "good_declined": 1.0}
    metrics = manifest["holdout_metrics"]
    assert metrics["decision_threshold"] == pytest.approx(5 / 6)
    assert metrics["expected_cost_per_applicant"] > 0
    for key in ("auc", "log_loss", "brier", "accuracy_at_threshold"):
        assert 0.0 < metrics[key] < 1.0
    stats = manifest["feature_statistics"]
    assert set(stats) == set(GERMAN.field_names)
    assert stats["age_years"]["kind"] == "numeric" and len(stats["age_years"]["quantiles"]) == 11
    assert sum(stats["checking_status"]["frequencies"].values()) == pytest.approx(1.0)
    assert len(manifest["training_data_sha256"]) == 64
    for key in ("created_at", "code_version", "library_versions", "training_command"):
        assert manifest[key]
    # The calibrator of the estimates before labels: fitted out of fold, judged on the hold-out.
    calibration = manifest["calibration"]
    assert calibration["method"] == "platt" and calibration["folds"] == 3
    assert calibration["fitted_on"] == (f"3-fold out-of-fold scores of the "
                                        f"{manifest['split']['train_count']} training rows")
    assert calibration["used"] == (calibration["holdout_calibrated"]["log_loss"]
                                   < calibration["holdout"]["log_loss"])
    assert calibration["holdout"]["log_loss"] == pytest.approx(metrics["log_loss"])


def test_handler_scores_a_batch_and_reports_the_versioned_path(credit_model_ref, german_records):
    records, _ = german_records
    handler = credit_model_handler(credit_model_ref.path, KINDS)
    model = handler.load_model()
    keyed = [(("id-1",), records[0]), (("id-2",), records[1])]
    results = list(handler.run_inference(keyed, model))
    direct = predict_scores(model, records[:2], KINDS)
    assert [k for k, _ in results] == [("id-1",), ("id-2",)]
    assert [r.inference for _, r in results] == pytest.approx(direct.tolist(), abs=1e-7)
    assert results[0][1].model_id == credit_model_ref.path
    assert "/credit_german/v0001/" in results[0][1].model_id
    assert CreditInference(KINDS)(model, [], None, "x") == []
