"""The evaluation job end to end: real credit and radar runs, late truth, metrics Parquet, the
retraining decision and its exit status, and the HTML report rendered in headless Chromium."""

import glob
import json
import os
import shutil

import numpy as np
import pyarrow.dataset as ds
import pytest

from models.config import default_path, load_evaluation_config
from models.credit.replay import write_jsonl
from models.credit.scenarios import generate, parse_scenarios
from models.exit_codes import RETRAIN as RETRAIN_EXIT_STATUS
from models.slices import group_names
from pipelines import credit_scoring, evaluate, radar_qc
from tests.conftest import (
    check_operations_page,
    german_scenarios,
    load_german,
    needs_browser,
    render_page,
)
from transforms.evaluation.join import METRIC_SCHEMA
from transforms.radar.synthetic_volumes import write_synthetic_volumes

pytestmark = pytest.mark.slow  # pipeline runs; the fast tier is -m 'not slow'

BAD_TRUTH = ['{"prediction_id": "x", ', '{"prediction_id": "app-w00-00000", "label": 2, '
             '"label_time": "2026-10-01T00:00:00+00:00"}']

GERMAN_FOLDER = "pipeline=credit_scoring/model_name=credit_german"
GERMAN_LATEST = "latest_credit_scoring_credit_german.json"


def _scenario_run(root, registry, german_path, scenario):
    """Requests of a scenario scored by the credit pipeline; returns (out, truth, counts)."""
    records, labels = load_german(german_path)
    scenarios = german_scenarios()
    requests, truth = generate(records, labels, scenarios, parse_scenarios(scenario, scenarios),
                               weeks=4,
                               per_week=300, shift_week=2, seed=7)
    os.makedirs(root)
    write_jsonl(requests, f"{root}/requests.jsonl")
    write_jsonl(truth, f"{root}/truth.jsonl")
    with open(f"{root}/truth.jsonl", "a", encoding="utf-8") as f:
        f.write("\n".join(BAD_TRUTH) + "\n")
    out = f"{root}/out"
    credit_scoring.run(["--input", f"{root}/requests.jsonl", "--registry", registry,
                        "--output", out, "--sample_rate", "0.5", "--run_id", "scenario"])
    return out, f"{root}/truth.jsonl", len(truth)


@pytest.fixture(scope="module")
def scenario_runs(credit_registry, german_path, tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluation")
    return {name: _scenario_run(f"{root}/{name}", credit_registry, german_path, scenario)
            for name, scenario in (("shifted", "young_no_history_surge,amounts_inflate,"
                                               "slice_outcomes_worsen"),
                                   ("unshifted", "none"))}


def _evaluate(out, truth, registry, *extra):
    return evaluate.main(["--pipeline", "credit_scoring", "--predictions", out, "--truth", truth,
                          "--registry", registry, "--output", out, *extra])


def _decision(out):
    paths = sorted(glob.glob(f"{out}/evaluation/decisions/{GERMAN_FOLDER}/*.json"))
    with open(paths[-1], encoding="utf-8") as f:
        return json.load(f)


def test_shifted_scenario_asks_to_retrain_with_evidence(scenario_runs, credit_registry):
    out, truth, _ = scenario_runs["shifted"]
    assert _evaluate(out, truth, credit_registry, "--decide") == RETRAIN_EXIT_STATUS
    decision = _decision(out)
    assert decision["retrain"] and "input_drift" in decision["fired"]
    drift = next(c for c in decision["checks"] if c["name"] == "input_drift")
    assert {"age_years", "credit_history"} <= set(drift["evidence"]["drifted_features"])
    assert decision["command"].startswith("python -m models.credit.train")
    assert decision["model_version"] == "v0001" and decision["labels_in_window"] > 100


def test_unshifted_replay_says_no(scenario_runs, credit_registry):
    out, truth, _ = scenario_runs["unshifted"]
    assert _evaluate(out, truth, credit_registry, "--decide") == 0
    decision = _decision(out)
    assert not decision["retrain"] and decision["fired"] == []
    drift = next(c for c in decision["checks"] if c["name"] == "input_drift")
    assert drift["evidence"]["drifted_features"] == []


def test_join_counts_and_bad_truth_are_conserved(scenario_runs, credit_registry):
    out, truth, truth_rows = scenario_runs["unshifted"]
    outcome = evaluate.run(["--pipeline", "credit_scoring", "--predictions", out, "--truth", truth,
                            "--registry", credit_registry, "--output", out,
                            "--run_id", "eval-join"])
    join = outcome["summary"]["join"]
    sampled = ds.dataset(f"{out}/predictions", partitioning="hive").count_rows()
    assert join["matched"] + join["predictions_unmatched"] == sampled
    distinct_truth = join["matched"] + join["truth_unmatched"]
    assert distinct_truth + join["truth_duplicates"] == truth_rows  # every good truth row
    assert join["truth_duplicates"] > 0 and join["predictions_unmatched"] > 0
    dead = ds.dataset(f"{out}/dead_letters", partitioning="hive").to_table(
        filter=ds.field("run_id") == "eval-join").to_pylist()
    assert sorted(d["stage"] for d in dead) == ["truth", "truth"]
    assert any("not 0 or 1" in d["message"] for d in dead)
    assert all(d["raw"] and d["origin"].startswith(truth) for d in dead)


def test_metrics_parquet_has_every_slice_and_accumulates_history(scenario_runs,
                                                                 credit_registry):
    out, truth, _ = scenario_runs["shifted"]
    for run_id in ("eval-history-1", "eval-history-2"):
        evaluate.run(["--pipeline", "credit_scoring", "--predictions", out, "--truth", truth,
                      "--registry", credit_registry, "--output", out, "--run_id", run_id])
    dataset = ds.dataset(f"{out}/evaluation/metrics", partitioning="hive")
    table = dataset.to_table()
    assert set(METRIC_SCHEMA.names) == set(table.schema.names)
    runs = set(table.column("evaluation_run_id").to_pylist())
    assert {"eval-history-1", "eval-history-2"} <= runs
    rows = [r for r in table.to_pylist() if r["evaluation_run_id"] == "eval-history-2"]
    config = load_evaluation_config(default_path("evaluation", "credit_german"))
    sizes = {(r["slice"], r["slice_value"]) for r in rows if r["metric"] == "size"
             and r["window"] == "all"}
    for dimension in config["slices"]:
        for group in group_names(dimension):
            assert (dimension["name"], group) in sizes
    weeks = sorted({r["window_start"] for r in rows if r["window"] == "week"})
    assert weeks == ["2026-09-07", "2026-09-14", "2026-09-21", "2026-09-28"]
    auc = [r["value"] for r in rows if r["metric"] == "auc" and r["slice"] == "all"
           and r["window"] == "all" and r["role"] == "served"]
    assert len(auc) == 1 and 0.5 < auc[0] <= 1.0
    # Beside it the estimate before labels, its interval and its error (labels are in).
    estimated = {r["detail"]: r for r in rows if r["metric"] == "auc" and r["slice"] == "all"
                 and r["window"] == "all" and r["role"] == "estimated"}
    assert set(estimated) == {None, "interval_low", "interval_high", "error"}
    assert estimated["interval_low"]["value"] < estimated[None]["value"] < \
        estimated["interval_high"]["value"]
    assert estimated["error"]["value"] == pytest.approx(auc[0] - estimated[None]["value"])
    latest = json.load(open(f"{out}/evaluation/{GERMAN_LATEST}", encoding="utf-8"))
    assert latest["evaluation_run_id"] == "eval-history-2" and latest["metrics"]


def test_options_are_checked_with_clear_messages(scenario_runs, credit_registry, tmp_path):
    out, truth, _ = scenario_runs["unshifted"]
    with pytest.raises(ValueError, match="give --truth"):
        evaluate.run(["--predictions", out, "--registry", credit_registry])
    with pytest.raises(ValueError, match="no sampled predictions"):
        evaluate.run(["--predictions", str(tmp_path), "--truth", truth])
    with pytest.raises(ValueError, match="matches no file"):
        evaluate.run(["--predictions", out, "--truth", f"{tmp_path}/none*.csv"])
    with pytest.raises(ValueError, match="is after"):
        evaluate.run(["--predictions", out, "--truth", truth, "--dt_from", "2026-10-01",
                      "--dt_to", "2026-09-01"])


def test_dt_and_version_filters_narrow_what_is_evaluated(scenario_runs, credit_registry):
    out, truth, _ = scenario_runs["unshifted"]
    outcome = evaluate.run(["--pipeline", "credit_scoring", "--predictions", out, "--truth",
                            truth, "--registry", credit_registry, "--output", out,
                            "--dt_from", "2026-09-14", "--dt_to", "2026-09-20"])
    weeks = {r["window_start"] for r in outcome["rows"] if r["window"] == "week"}
    assert weeks == {"2026-09-14"}
    with pytest.raises(ValueError, match="no sampled predictions"):
        evaluate.run(["--predictions", out, "--truth", truth, "--model_versions", "v0099"])


@needs_browser
def test_report_renders_in_headless_chromium(scenario_runs, credit_registry):
    out, truth, _ = scenario_runs["shifted"]
    outcome = evaluate.run(["--pipeline", "credit_scoring", "--predictions", out, "--truth",
                            truth, "--registry", credit_registry, "--output", out, "--decide"])
    images, broken_images, broken_links, text, tables = render_page(
        os.path.abspath(outcome["report"]))
    assert images >= 4 and broken_images == [] and broken_links == []
    assert "Retraining decision: RETRAIN" in text
    config = load_evaluation_config(default_path("evaluation", "credit_german"))
    shown = {(row["cells"][0], row["cells"][1]) for row in tables["slices-all"]}
    for dimension in config["slices"]:
        for group in group_names(dimension):
            assert (dimension["name"], group) in shown
    drifted = {row["cells"][0] for row in tables["drift-latest"] if row["cls"] == "drifted"}
    assert {"age_years", "credit_history"} <= drifted
    assert not {row["cells"][0] for row in tables["drift-latest"]
                if row["cells"][0] in ("telephone", "job")} & drifted


@needs_browser
def test_operations_page_shows_runs_estimates_and_alias_moves_where_they_happened(
        scenario_runs, credit_registry, tmp_path):
    from models import promotion
    from models import registry as model_registry
    from pipelines import operations

    out, truth, _ = scenario_runs["unshifted"]
    evaluate.run(["--pipeline", "credit_scoring", "--predictions", out, "--truth", truth,
                  "--registry", credit_registry, "--output", out, "--run_id", "ops-page"])
    registry = str(tmp_path / "registry")
    shutil.copytree(credit_registry, registry)
    promotion.promote(registry, "credit_german", "v0001", alias="shadow",
                      reason="a second move on the axis")
    assert operations.main(["--model", "credit_german", "--evaluations", out, "--registry",
                            registry, "--output", str(tmp_path / "page")]) == 0
    moves = model_registry.audit_trail(registry, "credit_german").moves
    text, tables = check_operations_page(str(tmp_path / "page" / "index.html"), moves)
    assert "ops-page" in {row["cells"][1] for row in tables["runs"]}
    assert {row["cells"][2] for row in tables["alias-moves"]} == {"production", "shadow"}
    weeks = [row["cells"] for row in tables["estimates"]]
    assert len(weeks) == 4 and all(cells[1] == "v0001" for cells in weeks)
    assert all(cells[7].endswith("(inside)") or cells[7].endswith("(outside)")
               for cells in weeks)  # every week labelled: the AUC's error stands beside it
    assert "shadow" in {row["cells"][0] for row in tables["serving"]}
    assert operations.main(["--model", "nobody", "--evaluations", out]) == 2


@pytest.fixture(scope="module")
def radar_evaluation(radar_registry, klbb_path, tmp_path_factory):
    root = tmp_path_factory.mktemp("radar_evaluation")
    paths = write_synthetic_volumes(klbb_path, f"{root}/volumes", f"{root}/truth.parquet",
                                    count=1, n_sweeps=2)
    out = f"{root}/out"
    radar_qc.run(["--input", f"{root}/volumes/*.nc", "--registry", radar_registry,
                  "--output", out, "--sample_rate", "1.0"])
    outcome = evaluate.run(["--pipeline", "radar_qc", "--predictions", out, "--truth",
                            f"{root}/truth.parquet", "--registry", radar_registry,
                            "--output", out, "--decide"])
    return paths, out, outcome


def test_radar_sweeps_are_scored_against_truth_masks(radar_evaluation):
    paths, out, outcome = radar_evaluation
    assert len(paths) == 1
    volumes = ds.dataset(f"{out}/qc_volumes", partitioning="hive").to_table().to_pylist()
    assert [v["radar"] for v in volumes] == ["XSYN"] and volumes[0]["sweeps_classified"] == 2
    assert outcome["summary"]["join"]["matched"] == 2
    rows = [r for r in outcome["rows"] if r["window"] == "all"]
    sweeps = {r["slice_value"] for r in rows if r["slice"] == "sweep" and r["metric"] == "csi"}
    assert sweeps == {"XSYN-20260907T120000Z-s00", "XSYN-20260907T120000Z-s01"}
    bands = {r["slice"] for r in rows if r["metric"] == "csi"}
    assert {"all", "sweep", "elevation_band", "range_band"} <= bands
    overall = {r["metric"]: r["value"] for r in rows if r["slice"] == "all"}
    assert 0.0 < overall["csi"] <= 1.0 and 0.0 <= overall["far"] <= 1.0
    hits_misses = [r["count"] for r in rows if r["slice"] == "range_band" and r["metric"] == "csi"]
    assert sum(hits_misses) == next(r["count"] for r in rows
                                    if r["slice"] == "all" and r["metric"] == "csi")
    decision = outcome["decision"]
    # Retrained as the evaluated version was (its manifest's command).
    assert decision["command"].startswith("python -m models.radar_qc.train --registry ")
    assert decision["command"].endswith("--epochs 2 --polarization dual")
    assert {c["name"] for c in decision["checks"]} >= {"csi_drop", "pod_drop", "far_rise",
                                                       "removed_share_shift"}
    # Watched without truth too: the radar against its own (here: only) day, per tilt.
    watched = {(r["detail"], r["metric"]): r for r in rows if r["slice"] == "radar"}
    assert {r["slice_value"] for r in rows if r["slice"] == "radar"} == {"XSYN"}
    assert watched[("all tilts", "sweeps")]["value"] == 2
    assert watched[("all tilts", "removed_share_change")]["value"] == pytest.approx(0.0)
    assert 0.0 < watched[("all tilts", "removed_share")]["value"] < 1.0


def test_radar_truth_mask_matches_the_generator(radar_evaluation, klbb_path):
    """The truth written for a sweep is what the generator labelled, on the model grid."""
    import pyarrow.parquet as pq

    from models.radar_qc.vocabulary import unpack_mask

    paths, out, _ = radar_evaluation
    truth = pq.read_table(os.path.join(os.path.dirname(os.path.dirname(paths[0])),
                                       "truth.parquet")).to_pylist()
    masks = [unpack_mask(t["mask_packed"], t["mask_shape"]) for t in truth]
    assert [m.shape for m in masks] == [(720, 1840), (720, 1840)]
    assert all(0 < m.mean() < 0.5 for m in masks) and not np.array_equal(*masks)


@needs_browser
def test_radar_report_shows_truth_and_predicted_masks(radar_evaluation):
    _, _, outcome = radar_evaluation
    images, broken_images, broken_links, text, _ = render_page(os.path.abspath(outcome["report"]))
    assert broken_images == [] and broken_links == []
    assert "Truth vs predicted removal masks" in text and images >= 2
    assert "Watched without truth" in text and "XSYN" in text


def test_truth_as_csv_joins_like_json_lines(scenario_runs, credit_registry, tmp_path):
    import csv

    out, truth, _ = scenario_runs["unshifted"]
    records = []
    with open(truth, encoding="utf-8") as f:
        for line in f:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    good = [r for r in records if r.get("label") in (0, 1)]
    csv_path = tmp_path / "truth.csv"
    with open(csv_path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["prediction_id", "label", "label_time"])
        writer.writeheader()
        writer.writerows(good)
    runs = {}
    for name, path in (("jsonl", truth), ("csv", str(csv_path))):
        runs[name] = evaluate.run(["--pipeline", "credit_scoring", "--predictions", out,
                                   "--truth", path, "--registry", credit_registry,
                                   "--output", str(tmp_path / name)])["summary"]["join"]
    assert runs["csv"] == runs["jsonl"] and runs["csv"]["matched"] > 500


def test_evaluation_writes_everything_through_beam_filesystems(scenario_runs, credit_registry):
    """An object-store output (gs:// in production): metrics, decision, JSON and report."""
    import uuid

    from tests.object_store import PREFIX, local

    out, truth, _ = scenario_runs["shifted"]
    remote_out = f"{PREFIX}evaluation-{uuid.uuid4().hex[:8]}"
    assert evaluate.main(["--pipeline", "credit_scoring", "--predictions", out, "--truth", truth,
                          "--registry", credit_registry, "--output", remote_out,
                          "--decide"]) == RETRAIN_EXIT_STATUS
    root = local(remote_out)
    assert glob.glob(f"{root}/evaluation/metrics/{GERMAN_FOLDER}/*.parquet")
    assert glob.glob(f"{root}/evaluation/decisions/{GERMAN_FOLDER}/*.json")
    reports = glob.glob(f"{root}/evaluation/reports/credit_scoring/credit_german/*/index.html")
    assert len(reports) == 1 and os.path.exists(
        os.path.join(os.path.dirname(reports[0]), "drift_latest.png"))
    latest = json.load(open(f"{root}/evaluation/{GERMAN_LATEST}", encoding="utf-8"))
    assert latest["report"].startswith(PREFIX) and latest["decision"]["retrain"]


def test_without_an_evaluation_configuration_the_run_reports_overall_metrics_and_drift(
        scenario_runs, credit_registry, tmp_path, monkeypatch):
    """Configuration the docs call optional is optional: a model without
    <config>/evaluation/<model>.json gets overall metrics and drift, no slices, and its report
    says why."""
    import pyarrow.dataset as ds

    from models import config as model_config

    bare = tmp_path / "config"
    shutil.copytree(model_config.SHIPPED_DIR, bare)
    (bare / "evaluation" / "credit_german.json").unlink()
    monkeypatch.setattr(model_config, "SHIPPED_DIR", bare)
    out, truth, _ = scenario_runs["unshifted"]
    target = str(tmp_path / "evaluation")
    outcome = evaluate.run(["--pipeline", "credit_scoring", "--predictions", out, "--truth",
                            truth, "--registry", credit_registry, "--output", target,
                            "--no_snapshot", "--run_id", "no-config"])
    rows = ds.dataset(f"{target}/evaluation/metrics", partitioning="hive").to_table().to_pylist()
    assert {r["slice"] for r in rows} <= {"all", "drift", "join"}
    assert any(r["slice"] == "drift" for r in rows)
    assert any(r["metric"] == "auc" and r["slice"] == "all" for r in rows)
    assert outcome["summary"]["config"].startswith("none (")
    page = open(outcome["report"], encoding="utf-8").read()
    assert "overall metrics and drift, no slices" in page
    # A configuration named on purpose must exist.
    with pytest.raises(ValueError, match="cannot read evaluation configuration"):
        evaluate.run(["--pipeline", "credit_scoring", "--predictions", out, "--truth", truth,
                      "--registry", credit_registry, "--output", target, "--config",
                      str(tmp_path / "missing.json")])
