"""Evaluation's pure functions: metrics on hand-computed cases, drift, slices, the join, truth
records, and retraining rules."""

import base64
import datetime
import math

import numpy as np
import pytest

from models.config import ConfigError, default_path, load_evaluation_config
from models.credit.scenarios import generate, parse_scenarios
from models.exit_codes import RETRAIN as RETRAIN_EXIT_STATUS
from models.metrics import (
    calibration_table,
    detection_scores,
    expected_cost,
    jensen_shannon,
    log_loss,
    psi,
    roc_auc,
)
from models.radar_qc.vocabulary import unpack_mask
from models.slices import fairness_gaps, slice_value
from models.statistics import feature_statistics
from tests.conftest import german_dataset, german_scenarios, load_german
from transforms.evaluation.drift import categorical_drift, drift_report, numeric_drift
from transforms.evaluation.join import (
    TruthError,
    group_keys,
    resolve_join,
    truth_record,
    window_start,
)
from transforms.evaluation.metrics import credit_group_metrics, radar_group_metrics
from transforms.evaluation.retraining import check_rule, decide

SCENARIOS = german_scenarios()
UTC = datetime.UTC
T0 = datetime.datetime(2026, 9, 7, tzinfo=UTC)


# --- metrics against hand-computed cases -------------------------------------------------

def test_auc_counts_pairs_and_half_ties():
    # positives 0.9, 0.4; negatives 0.1, 0.6: pairs won 0.9>0.1, 0.9>0.6, 0.4>0.1 -> 3/4.
    assert roc_auc([1, 0, 1, 0], [0.9, 0.1, 0.4, 0.6]) == pytest.approx(0.75)
    # one tie between a positive and a negative counts one half: (1 + 0.5) / 2.
    assert roc_auc([1, 1, 0], [0.5, 0.9, 0.5]) == pytest.approx(0.75)


def test_log_loss_by_hand():
    expected = -(math.log(0.8) + math.log(0.6)) / 2
    assert log_loss([1, 0], [0.8, 0.4]) == pytest.approx(expected)
    assert expected == pytest.approx(0.366985, abs=1e-6)


def test_psi_by_hand_and_zero_for_equal_distributions():
    expected = 0.25 * math.log(0.5) * -1 + 0.25 * math.log(1.5)
    assert psi([0.5, 0.5], [0.25, 0.75]) == pytest.approx(expected)
    assert psi([0.2, 0.3, 0.5], [0.2, 0.3, 0.5]) == 0.0


def test_csi_pod_far_by_hand():
    truth = np.array([[1, 1, 1, 0, 0]], dtype=bool)
    detected = np.array([[1, 1, 0, 1, 0]], dtype=bool)
    scores = detection_scores(truth, detected)  # 2 hits, 1 miss, 1 false alarm
    assert (scores["hits"], scores["misses"], scores["false_alarms"]) == (2, 1, 1)
    assert scores["csi"] == pytest.approx(0.5)
    assert scores["pod"] == pytest.approx(2 / 3)
    assert scores["far"] == pytest.approx(1 / 3)


def test_expected_cost_uses_the_german_cost_matrix():
    # good approved 0, good declined 1, bad approved 5, bad declined 0 -> 6 / 4.
    assert expected_cost([1, 1, 0, 0], [True, False, True, False], 5.0, 1.0) == pytest.approx(1.5)


def test_calibration_bins_mean_score_and_observed_rate():
    table = calibration_table([1, 0, 1, 1], [0.05, 0.15, 0.85, 0.95], bins=10)
    assert [(b["low"], b["count"]) for b in table] == [(0.0, 1), (0.1, 1), (0.8, 1), (0.9, 1)]
    assert table[1]["observed_rate"] == 0.0 and table[3]["mean_probability"] == 0.95


def test_jensen_shannon_bounds():
    assert jensen_shannon([0.5, 0.5], [0.5, 0.5]) == pytest.approx(0.0)
    assert jensen_shannon([1.0, 0.0], [0.0, 1.0]) == pytest.approx(1.0)


# --- drift ---------------------------------------------------------------------------------

def test_numeric_drift_on_training_deciles(german_path):
    records, _ = load_german(german_path)
    stats = feature_statistics(records, german_dataset().kinds)["credit_amount"]
    amounts = np.array([r["credit_amount"] for r in records])
    assert numeric_drift(stats, amounts)["psi"] < 0.01
    inflated = numeric_drift(stats, amounts * 1.3)
    assert inflated["psi"] > 0.1 and inflated["mean"] > inflated["training_mean"]


def test_categorical_drift_reports_unseen_codes():
    training = {"kind": "categorical", "frequencies": {"A": 0.5, "B": 0.5}}
    drift = categorical_drift(training, ["A", "A", "C", "C"])
    assert drift["unseen_codes"] == ["C"]
    assert drift["linf"] == pytest.approx(0.5)  # B fell from 0.5 to 0, C rose from 0 to 0.5
    assert drift["psi"] > 1.0


def _window_columns(requests, names, week):
    rows = [r for r in requests if r["request_id"].startswith(f"app-w{week:02d}")]
    return {n: [r[n] for r in rows] for n in names}


def test_drift_fires_on_a_shifted_scenario_and_not_on_an_unshifted_one(german_path):
    records, labels = load_german(german_path)
    stats = feature_statistics(records, german_dataset().kinds)
    config = load_evaluation_config(default_path("evaluation", "credit_german"))["drift"]
    kwargs = {"weeks": 4, "per_week": 400, "shift_week": 2, "seed": 3}
    surge, _ = generate(records, labels, SCENARIOS, ("young_no_history_surge",), **kwargs)
    inflated, _ = generate(records, labels, SCENARIOS, ("amounts_inflate",), **kwargs)
    plain, _ = generate(records, labels, SCENARIOS, parse_scenarios("none", SCENARIOS),
                        **kwargs)

    def drifted(requests, week):
        report = drift_report(stats, _window_columns(requests, stats, week), config["features"],
                              config["default"])
        return {item["feature"] for item in report if item["drifted"]}

    assert {"age_years", "credit_history"} <= drifted(surge, 3)
    assert "credit_amount" in drifted(inflated, 3)
    assert drifted(surge, 0) == drifted(inflated, 1) == set()  # before the shift
    assert drifted(plain, 3) == set()


def test_scenario_truth_arrives_later_with_corrections(german_path):
    records, labels = load_german(german_path)
    requests, truth = generate(records, labels, {}, (), weeks=1, per_week=300, seed=1,
                               corrected_share=0.1, missing_share=0.1)
    events = {r["request_id"]: r["event_time"] for r in requests}
    assert all(t["label_time"] > events[t["prediction_id"]] for t in truth)
    ids = [t["prediction_id"] for t in truth]
    assert len(set(ids)) < 300 and len(ids) > len(set(ids))  # some missing, some corrected
    with pytest.raises(ValueError, match="unknown scenario"):
        parse_scenarios("amounts_deflate", SCENARIOS)


# --- join and truth ------------------------------------------------------------------------

def _prediction(pid="p1", processed=T0, **extra):
    return {"prediction_id": pid, "processed_at": processed, "event_time": T0,
            "model_name": "credit", "model_version": "v0001", **extra}


def test_join_keeps_the_last_label_time_and_counts_what_happened():
    early = {"prediction_id": "p1", "label": 0, "label_time": T0}
    late = {"prediction_id": "p1", "label": 1, "label_time": T0 + datetime.timedelta(days=1)}
    row, counts = resolve_join("p1", [_prediction()], [late, early])
    assert row["label"] == 1 and row["label_time"] == late["label_time"]
    assert counts == {"matched": 1, "predictions_unmatched": 0, "truth_unmatched": 0,
                      "truth_duplicates": 1, "prediction_duplicates": 0}

    row, counts = resolve_join("p2", [_prediction("p2")], [])
    assert row["prediction_id"] == "p2" and "label" not in row
    assert counts["predictions_unmatched"] == 1

    row, counts = resolve_join("p3", [], [early])
    assert row is None and counts["truth_unmatched"] == 1

    newer = _prediction(processed=T0 + datetime.timedelta(hours=1), score=0.9)
    row, counts = resolve_join("p1", [_prediction(score=0.1), newer], [early])
    assert row["score"] == 0.9 and counts["prediction_duplicates"] == 1


def test_truth_records_are_checked_with_clear_reasons():
    record = truth_record({"prediction_id": 7, "label": "1", "label_time": "2026-10-01T00:00Z"})
    assert record == {"prediction_id": "7", "label": 1,
                      "label_time": datetime.datetime(2026, 10, 1, tzinfo=UTC)}
    for raw, reason in [
        ({"label": 1, "label_time": "2026-10-01T00:00Z"}, "missing prediction_id"),
        ({"prediction_id": "a", "label": 1}, "missing label_time"),
        ({"prediction_id": "a", "label": 2, "label_time": "2026-10-01T00:00Z"}, "not 0 or 1"),
        ({"prediction_id": "a", "label_time": "2026-10-01T00:00Z"}, "missing label"),
        ({"prediction_id": "a", "label": 1, "label_time": "2026-10-01"}, "no time zone"),
        ({"prediction_id": "a", "label": 1, "label_time": "soon"}, "not an ISO-8601"),
    ]:
        with pytest.raises(TruthError, match=reason):
            truth_record(raw)
    mask = np.packbits(np.array([1, 0, 1, 1], dtype=bool)).tobytes()
    radar = truth_record({"prediction_id": "v-s00", "mask_packed": base64.b64encode(mask).decode(),
                          "mask_shape": "[2, 2]", "label_time": "2026-10-01T00:00:00+00:00"})
    assert unpack_mask(radar["truth_mask_packed"], radar["truth_mask_shape"]).tolist() == [
        [True, False], [True, True]]


def test_windows_are_iso_weeks_and_days():
    sunday = datetime.datetime(2026, 9, 13, 23, 0, tzinfo=UTC)
    assert window_start(sunday, "week") == "2026-09-07"
    assert window_start(sunday, "day") == "2026-09-13"
    keys = group_keys(_prediction(event_time=sunday), "week")
    assert keys == [("credit", "v0001", "served", "all", "all"),
                    ("credit", "v0001", "served", "week", "2026-09-07")]


# --- slices ----------------------------------------------------------------------------------

def test_slice_definitions_bands_and_groups():
    config = load_evaluation_config(default_path("evaluation", "credit_german"))
    dims = {d["name"]: d for d in config["slices"]}
    assert {"sex_personal_status", "age_band", "foreign_worker", "credit_history"} <= set(dims)
    ages = [slice_value(dims["age_band"], a) for a in (18, 24, 25, 60, 61, 75)]
    assert ages == ["<25", "<25", "25-60", "25-60", ">60", ">60"]
    assert slice_value(dims["foreign_worker"], "A201") == "yes"
    assert slice_value(dims["credit_history"], "A31") == "no_credits_or_all_paid"
    assert slice_value(dims["credit_history"], "A39") == "other"


def test_load_config_rejects_a_slice_without_groups(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{"version": "1", "slices": [{"name": "age", "field": "age_years"}]}')
    with pytest.raises(ConfigError, match="needs groups, bands or by_value"):
        load_evaluation_config(str(path))


def test_slices_and_drift_limits_are_checked_against_the_data_set(tmp_path):
    kinds = german_dataset().kinds
    load_evaluation_config(default_path("evaluation", "credit_german"), kinds)  # the shipped pair
    path = tmp_path / "evaluation.json"
    path.write_text('{"version": "1", "slices": [{"name": "income", "field": "income", '
                    '"bands": [{"name": "low", "max": 1000}]}]}')
    with pytest.raises(ConfigError, match="slice 'income' is on field 'income', which the data "
                                          "set does not have"):
        load_evaluation_config(str(path), kinds)
    path.write_text('{"version": "1", "slices": [{"name": "age", "field": "age_years", '
                    '"groups": {"young": ["18"]}}]}')
    with pytest.raises(ConfigError, match="uses groups on numeric field 'age_years'"):
        load_evaluation_config(str(path), kinds)
    path.write_text('{"version": "1", "drift": {"features": {"salary": {"psi": 0.1}}}}')
    with pytest.raises(ConfigError, match="drift limits for fields the data set does not "
                                          "have: salary"):
        load_evaluation_config(str(path), kinds)
    with pytest.raises(ConfigError, match="cannot read evaluation configuration file"):
        load_evaluation_config(str(tmp_path / "absent.json"), kinds)


def test_fairness_gaps_by_hand():
    labels = np.array([1, 1, 0, 0, 1, 1, 0, 0])
    approved = np.array([1, 0, 0, 0, 1, 1, 1, 0], dtype=bool)
    member = np.array([1, 1, 1, 1, 0, 0, 0, 0], dtype=bool)
    gaps = fairness_gaps(labels, approved, member, min_size=1, min_class_count=1)
    assert gaps["approval_rate"] == 0.25 and gaps["approval_rate_rest"] == 0.75
    assert gaps["approval_rate_ratio"] == pytest.approx(1 / 3)
    assert gaps["tpr_diff"] == pytest.approx(0.5 - 1.0)
    assert gaps["fpr_diff"] == pytest.approx(0.0 - 0.5)
    assert not gaps["small"]
    assert fairness_gaps(labels, approved, member, min_size=5, min_class_count=1)["small"]


def test_credit_group_metrics_show_every_configured_slice_and_flag_small_ones(german_path):
    records, labels = load_german(german_path)
    config = load_evaluation_config(default_path("evaluation", "credit_german"))
    rng = np.random.default_rng(0)
    rows = [dict(r, prediction_id=str(i), label=int(labels[i]), score=float(s),
                 decision="approve" if s > 0.8 else "decline", rules_version="r1")
            for i, (r, s) in enumerate(zip(records[:300], rng.uniform(0, 1, 300)))]
    out = credit_group_metrics(rows, config, {})
    sizes = {(m["slice"], m["slice_value"]): m for m in out if m["metric"] == "size"}
    for dimension in config["slices"]:
        for group in (dimension.get("groups") or {b["name"]: 0 for b in dimension["bands"]}):
            assert (dimension["name"], group) in sizes
    assert sizes[("age_band", ">60")]["flag"] == "small"
    assert sum(m["value"] for k, m in sizes.items() if k[0] == "age_band") == 300
    overall = {m["metric"]: m for m in out if m["slice"] == "all" and not m["detail"]
               and m.get("role") != "estimated"}
    assert overall["labelled"]["value"] == 300
    assert 0.4 < overall["auc"]["value"] < 0.6  # random scores
    # Without error costs (a data set that has none) the cost is not made up.
    assert overall["expected_cost_per_applicant"]["value"] is None
    assert overall["expected_cost_per_applicant"]["flag"] == "not_available"
    costed = credit_group_metrics(rows, {**config, "costs": {"bad_approved": 5.0,
                                                             "good_declined": 1.0}}, {})
    [cost] = [m for m in costed if m["metric"] == "expected_cost_per_applicant"
              and m["slice"] == "all" and m.get("role") != "estimated"]
    approved = np.array([r["decision"] == "approve" for r in rows])
    good = labels[:300] == 1
    expected = (5.0 * np.sum(approved & ~good) + 1.0 * np.sum(~approved & good)) / 300
    assert cost["value"] == pytest.approx(expected) and cost["flag"] is None


def test_radar_group_metrics_per_sweep_elevation_and_range_band():
    shape = (2, 4)
    predicted = np.array([[1, 1, 0, 0], [0, 0, 0, 1]], dtype=bool)
    truth = np.array([[1, 0, 0, 0], [0, 0, 1, 1]], dtype=bool)
    row = {"prediction_id": "X-s00", "elevation": 0.5, "mask_shape": list(shape),
           "mask_packed": np.packbits(predicted).tobytes(),
           "truth_mask_packed": np.packbits(truth).tobytes(), "truth_mask_shape": list(shape),
           "first_gate_m": 10_000.0, "gate_spacing_m": 10_000.0}  # gates at 10..40 km
    out = radar_group_metrics([row], {"range_bands_km": [0, 25, 50],
                                      "elevation_bands_deg": [0, 1, 2, 4, 8, 20]})
    figures = {(m["slice"], m["slice_value"], m["metric"]): m["value"] for m in out}
    # 2 hits, 1 miss, 1 false alarm overall.
    assert figures[("all", "all", "csi")] == pytest.approx(0.5)
    assert figures[("sweep", "X-s00", "pod")] == pytest.approx(2 / 3)
    assert figures[("elevation_band", "0-1deg", "far")] == pytest.approx(1 / 3)
    # 10-20 km gates: 1 hit, 1 false alarm; 30-40 km: 1 hit, 1 miss.
    assert figures[("range_band", "0-25km", "csi")] == pytest.approx(0.5)
    assert figures[("range_band", "25-50km", "pod")] == pytest.approx(0.5)
    assert figures[("range_band", "25-50km", "far")] == pytest.approx(0.0)


# --- retraining rules -----------------------------------------------------------------------

def _rows(window="2026-09-14", **values):
    base = {"evaluation_run_id": "e1", "pipeline": "credit_scoring", "model_name": "credit",
            "model_version": "v0001", "window": "week", "window_start": window,
            "slice": "all", "slice_value": "all", "detail": None, "flag": None, "count": 1}
    rows = [dict(base, metric=k, value=v) for k, v in values.items()]
    return rows


RULES = {"version": "t", "window": "latest", "min_new_labels": 100,
         "retrain_command": "python -m models.credit.train --registry {registry}",
         "rules": [{"name": "auc_drop", "type": "metric_drop", "metric": "auc", "max_drop": 0.05},
                   {"name": "gap", "type": "slice_gap", "gap": "tpr_diff", "abs_above": 0.2,
                    "action": "alert"}]}


def test_metric_drop_fires_and_asks_to_retrain():
    rows = _rows(auc=0.70, labelled=150) + _rows("2026-09-07", auc=0.9, labelled=150)
    decision = decide(rows, RULES, {"auc": 0.83}, T0, registry="reg")
    assert decision["retrain"] and decision["fired"] == ["auc_drop"]
    assert decision["window_start"] == "2026-09-14"  # the latest window is judged
    auc = next(c for c in decision["checks"] if c["name"] == "auc_drop")
    assert auc["evidence"]["change"] == pytest.approx(0.13)
    assert decision["command"] == "python -m models.credit.train --registry reg"
    assert RETRAIN_EXIT_STATUS not in (0, 1, 2)


def test_retrain_command_can_repeat_how_the_version_in_service_was_trained():
    rows = _rows(auc=0.70, labelled=150)
    rules = {**RULES, "retrain_command": "{training_command}"}
    trained = ("python -m transforms.radar.weak_labels --registry reg "
               "--weak_labels volumes/KLOT")
    decision = decide(rows, rules, {"auc": 0.83}, T0, registry="reg", training_command=trained)
    assert decision["command"] == trained
    assert decide(rows, rules, {"auc": 0.83}, T0)["command"] == (
        "(the manifest records no training command)")


def test_no_rule_fires_on_a_healthy_window():
    decision = decide(_rows(auc=0.82, labelled=150), RULES, {"auc": 0.83}, T0)
    assert not decision["retrain"] and decision["reason"] == "no rule fired"


def test_too_few_new_labels_hold_retraining_back():
    decision = decide(_rows(auc=0.60, labelled=20), RULES, {"auc": 0.83}, T0)
    assert not decision["retrain"] and decision["fired"] == ["auc_drop"]
    assert "only 20 new labels" in decision["reason"]


def test_alert_rules_are_reported_but_do_not_retrain():
    rows = _rows(auc=0.83, labelled=150) + [dict(_rows(tpr_diff=-0.4)[0], slice="age_band",
                                                 slice_value="<25", flag="significant")]
    decision = decide(rows, RULES, {"auc": 0.83}, T0)
    assert decision["alerts"] == ["gap"] and not decision["retrain"]
    small = [dict(rows[-1], flag="small")]
    assert not check_rule(RULES["rules"][1], small, {}, T0, None)["fired"]


def test_slice_gap_against_the_holdout_baseline():
    rule = {"name": "widened", "type": "slice_gap", "gap": "tpr_diff", "compare": "holdout",
            "max_change": 0.2}
    row = dict(_rows(tpr_diff=-0.5)[0], slice="age_band", slice_value="<25")
    baseline = {"age_band": {"<25": {"tpr_diff": -0.35, "small": False}}}
    assert not check_rule(rule, [row], {}, T0, None, baseline)["fired"]  # moved 0.15 only
    baseline["age_band"]["<25"]["tpr_diff"] = -0.2
    result = check_rule(rule, [row], {}, T0, None, baseline)
    assert result["fired"] and result["evidence"]["breaches"][0]["change"] == pytest.approx(-0.3)


def test_schedule_and_event_rules():
    schedule = {"name": "weekly", "type": "schedule", "weekday": "sunday", "at": "02:00",
                "within_minutes": 60}
    sunday = datetime.datetime(2026, 11, 29, 2, 30, tzinfo=UTC)
    assert check_rule(schedule, [], {}, sunday, None)["fired"]
    assert not check_rule(schedule, [], {}, sunday + datetime.timedelta(hours=1), None)["fired"]
    assert not check_rule(schedule, [], {}, sunday + datetime.timedelta(days=1), None)["fired"]
    assert not check_rule(dict(schedule, enabled=False), [], {}, sunday, None)["fired"]

    event = {"name": "rules", "type": "event", "event": "rules_version_changed"}
    rows = [dict(_rows(rows_by_rules_version=10)[0], detail="2026.12.1")]
    assert check_rule(event, rows, {}, T0, {"rules_versions": ["2026.11.1"]})["fired"]
    assert not check_rule(event, rows, {}, T0, {"rules_versions": ["2026.12.1"]})["fired"]
    assert not check_rule(event, rows, {}, T0, None)["fired"]  # no previous decision


def test_evidence_reads_as_sentences_with_rounded_figures():
    from transforms.evaluation.retraining import evidence_sentence

    rows = _rows(auc=0.70123456789, labelled=150) + [dict(
        _rows(tpr_diff=-0.41234567)[0], slice="age_band", slice_value="<25", flag="significant",
        count=212)]
    decision = decide(rows, RULES, {"auc": 0.83}, T0)
    auc, gap = (evidence_sentence(c) for c in decision["checks"])
    assert auc == ("auc 0.701 now against 0.83 on the hold-out: a drop of 0.129, more than the "
                   "0.05 allowed.")
    assert gap == "tpr_diff beyond ±0.2 in age_band=<25 -0.412, 212 rows."
    healthy = decide(_rows(auc=0.82, labelled=150), RULES, {"auc": 0.83}, T0)
    assert [evidence_sentence(c) for c in healthy["checks"]] == [
        "auc 0.82 now against 0.83 on the hold-out: a drop of 0.01, within the 0.05 allowed.",
        "No tpr_diff of any group beyond ±0.2."]
    widened = check_rule({"name": "w", "type": "slice_gap", "gap": "tpr_diff",
                          "compare": "holdout", "max_change": 0.2},
                         [dict(rows[-1])], {}, T0, None,
                         {"age_band": {"<25": {"tpr_diff": -0.1, "small": False}}})
    assert evidence_sentence(widened) == (
        "tpr_diff moved more than 0.2 in age_band=<25 -0.412 (hold-out -0.1, moved -0.312), "
        "212 rows.")
