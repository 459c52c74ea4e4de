"""Performance estimated before labels (CBPE), the Platt calibrator, and their metric rows and
rules, against computations written here independently."""

import datetime

import numpy as np
import pytest
from scipy.optimize import minimize

from models.calibration import (
    apply_calibration,
    expected_calibration_error,
    fit_platt,
    fold_indices,
)
from models.config import ConfigError, load_retraining_rules
from models.estimation import estimate, expected_auc, interval
from models.metrics import roc_auc
from models.statistics import feature_statistics
from transforms.evaluation.metrics import applicant_keys, credit_group_metrics
from transforms.evaluation.retraining import check_rule, evidence_sentence

COSTS = {"bad_approved": 5.0, "good_declined": 1.0}


def _window(rng, applicants=60, rows=120):
    """Rows drawn with replacement from a few applicants (as the demo draws its weeks)."""
    scores = rng.random(applicants)
    index = rng.integers(0, applicants, rows)
    return scores, index


def test_expected_auc_is_the_pairwise_expectation_over_different_applicants():
    rng = np.random.default_rng(1)
    scores, index = _window(rng, 40, 120)
    s, p = scores[index], np.clip(0.1 + 0.8 * scores[index], 0, 1)
    numerator = denominator = 0.0
    for i in range(len(s)):
        for j in range(len(s)):
            if index[i] == index[j]:
                continue  # one applicant's rows share one outcome: never a good/bad pair
            weight = p[i] * (1 - p[j])
            denominator += weight
            numerator += weight * (1.0 if s[i] > s[j] else 0.5 if s[i] == s[j] else 0.0)
    assert expected_auc(p, s, index) == pytest.approx(numerator / denominator, abs=1e-12)
    # ... and the mean realized AUC when each applicant's outcome is drawn from p.
    realized = []
    p_applicant = np.clip(0.1 + 0.8 * scores, 0, 1)
    for _ in range(3000):
        good = (rng.random(len(scores)) < p_applicant)[index]
        if 0 < good.sum() < len(good):
            realized.append(roc_auc(good, s))
    assert np.mean(realized) == pytest.approx(expected_auc(p, s, index), abs=0.01)


def test_estimate_of_accuracy_and_cost_is_their_expectation():
    p = np.array([0.9, 0.2, 0.6, 0.4])
    approved = np.array([True, False, True, False])
    figures = estimate(p, p, approved, costs=COSTS)
    assert figures["accuracy"] == pytest.approx(np.mean([0.9, 0.8, 0.6, 0.6]))
    assert figures["expected_cost_per_applicant"] == pytest.approx(
        np.mean([0.1 * 5, 0.2 * 1, 0.4 * 5, 0.4 * 1]))
    assert figures["approval_rate"] == 0.5
    assert np.isnan(estimate(p, p, approved)["expected_cost_per_applicant"])  # no costs


def test_interval_covers_the_realized_auc_about_95_in_100_when_calibrated():
    rng = np.random.default_rng(7)
    inside, widths, trials = 0, [], 200
    for trial in range(trials):
        scores, index = _window(rng)
        s = scores[index]
        good = (rng.random(len(scores)) < scores)[index]   # the scores are calibrated
        low, high = interval(s, s, s > 0.5, index, COSTS, seed=trial)["auc"]
        widths.append(high - low)
        inside += low <= roc_auc(good, s) <= high
    assert 0.90 <= inside / trials <= 0.99
    # A miscalibrated model (the truth much worse than its scores say) falls outside far more.
    outside = 0
    for trial in range(50):
        scores, index = _window(rng)
        s = scores[index]
        good = (rng.random(len(scores)) < 0.5)[index]       # outcomes unrelated to the scores
        low, high = interval(s, s, s > 0.5, index, seed=trial)["auc"]
        outside += not low <= roc_auc(good, s) <= high
    assert outside >= 40


def test_platt_fit_is_the_maximum_likelihood_fit_and_is_used_only_when_told():
    rng = np.random.default_rng(3)
    scores = rng.random(400)
    labels = (rng.random(400) < scores ** 2).astype(int)   # over-confident scores
    fitted = fit_platt(scores, labels)
    x = np.log(np.clip(scores, 1e-6, 1 - 1e-6) / (1 - np.clip(scores, 1e-6, 1 - 1e-6)))
    n_pos, n_neg = labels.sum(), (1 - labels).sum()
    target = np.where(labels == 1, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2))

    def loss(theta):
        q = np.clip(1 / (1 + np.exp(-(theta[0] * x + theta[1]))), 1e-12, 1 - 1e-12)
        return -np.sum(target * np.log(q) + (1 - target) * np.log(1 - q))

    best = minimize(loss, [1.0, 0.0], method="Nelder-Mead", options={"xatol": 1e-8,
                                                                      "fatol": 1e-10}).x
    assert [fitted["slope"], fitted["intercept"]] == pytest.approx(list(best), abs=1e-4)
    calibrated = apply_calibration({**fitted, "used": True}, scores)
    assert expected_calibration_error(labels, calibrated) < expected_calibration_error(
        labels, scores)
    assert np.array_equal(apply_calibration({**fitted, "used": False}, scores), scores)
    assert np.array_equal(apply_calibration(None, scores), scores)
    folds = fold_indices(labels, 3, seed=0)
    assert sorted(np.concatenate(folds).tolist()) == list(range(400))
    assert all(abs(labels[f].mean() - labels.mean()) < 0.02 for f in folds)


def _joined_rows(count=200, labelled=True, role="served"):
    rng = np.random.default_rng(5)
    rows = []
    for i in range(count):
        applicant = i % 50            # 50 applicants, four rows each
        score = 0.2 + 0.6 * (applicant / 49)
        rows.append({"prediction_id": f"p{i:03d}", "score": score, "role": role,
                     "decision": "approve" if score > 0.5 else "decline",
                     "rules_version": "r1", "code_version": "1.0",
                     "duration_months": float(applicant), "purpose": "A40",
                     "label": (int(rng.random() < score) if labelled else None)})
    return rows


CONFIG = {"approve_decision": "approve", "calibration_bins": 5, "min_slice_size": 10,
          "min_class_count": 2, "drift": {}, "costs": COSTS,
          "slices": [{"name": "purpose", "field": "purpose", "groups": {"car": ["A40"]}}]}
STATISTICS = feature_statistics(_joined_rows(), {"duration_months": "numeric",
                                                 "purpose": "categorical"})


def test_metric_rows_carry_estimates_their_interval_and_once_labelled_their_error():
    out = credit_group_metrics(_joined_rows(), CONFIG, STATISTICS)
    estimated = {(r["slice"], r["slice_value"], r["metric"], r["detail"]): r for r in out
                 if r.get("role") == "estimated"}
    point = estimated[("all", "all", "auc", None)]
    low = estimated[("all", "all", "auc", "interval_low")]["value"]
    high = estimated[("all", "all", "auc", "interval_high")]["value"]
    assert low < point["value"] < high and point["count"] == 200
    assert point["flag"] == "raw_scores"         # no calibrator in the statistics
    realized = next(r for r in out if r.get("role") is None and r["slice"] == "all"
                    and r["metric"] == "auc" and r["detail"] is None)
    error = estimated[("all", "all", "auc", "error")]
    assert error["value"] == pytest.approx(realized["value"] - point["value"])
    assert error["flag"] == ("inside" if low <= realized["value"] <= high else "outside")
    assert ("purpose", "car", "auc", None) in estimated              # per slice group too
    assert ("all", "all", "approval_rate", "error") not in estimated  # observed, not estimated
    # Applicants, not rows: four rows per applicant here.
    assert len(set(applicant_keys(_joined_rows(), ["duration_months", "purpose"]))) == 50

    unlabelled = credit_group_metrics(_joined_rows(labelled=False), CONFIG, STATISTICS)
    estimated_only = [r for r in unlabelled if r.get("role") == "estimated"]
    assert estimated_only and not any(r["detail"] == "error" for r in estimated_only)
    same = {(r["slice"], r["metric"], r["detail"]): r["value"] for r in estimated_only}
    assert same[("all", "auc", None)] == pytest.approx(point["value"])  # labels do not matter

    calibrator = {"method": "platt", "slope": 0.5, "intercept": 0.0, "used": True}
    calibrated = credit_group_metrics(_joined_rows(), CONFIG,
                                      {**STATISTICS, "calibration": calibrator})
    accuracy = next(r for r in calibrated if r.get("role") == "estimated"
                    and r["metric"] == "accuracy" and r["slice"] == "all" and not r["detail"])
    assert accuracy["flag"] == "calibrated"
    # A shadow's group has no estimates of its own.
    shadow = credit_group_metrics(_joined_rows(role="shadow"), CONFIG, STATISTICS)
    assert not any(r.get("role") == "estimated" for r in shadow)


def test_estimated_drop_alerts_with_its_interval_and_cannot_ask_for_retraining(tmp_path):
    def row(detail, value, role="estimated"):
        return {"slice": "all", "slice_value": "all", "metric": "auc", "detail": detail,
                "value": value, "role": role, "flag": None}

    rows = [row(None, 0.70), row("interval_low", 0.62), row("interval_high", 0.78),
            row(None, 0.83, role="served")]
    rule = {"name": "estimated_auc_drop", "type": "estimated_drop", "metric": "auc",
            "max_drop": 0.05, "action": "alert"}
    now = datetime.datetime(2026, 12, 7, tzinfo=datetime.UTC)
    check = check_rule(rule, rows, {"auc": 0.80}, now, None)
    assert check["fired"] and check["action"] == "alert"
    assert check["evidence"]["current"] == 0.70 and check["evidence"]["interval"] == [0.62, 0.78]
    assert "estimated at 0.7 (95 % interval 0.62 to 0.78) before labels" in evidence_sentence(
        check)
    realized = check_rule({**rule, "type": "metric_drop"}, rows, {"auc": 0.80}, now, None)
    assert not realized["fired"] and realized["evidence"]["current"] == 0.83
    path = tmp_path / "rules.json"
    path.write_text('{"version": "1", "rules": [{"name": "e", "type": "estimated_drop", '
                    '"metric": "auc", "max_drop": 0.05}]}')
    with pytest.raises(ConfigError, match="needs \"action\": \"alert\""):
        load_retraining_rules(str(path))
