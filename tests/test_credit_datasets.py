"""Any credit data set by configuration alone: the configuration's rules, reading data files as
it describes them, and the Credit Approval (crx) set end to end beside German credit."""

import datetime
import json
import os

import numpy as np
import pyarrow.dataset as ds
import pytest

from models import registry as model_registry
from models.config import ConfigError
from models.credit.dataset import DataError, load_dataset, parse_dataset_text, read_data
from models.credit.replay import replay_requests
from pipelines import credit_scoring, evaluate, explain
from tests.conftest import load_german, write_jsonl

BASE = {"version": "1", "model_name": "bank_x", "file": {"format": "csv", "header": True},
        "fields": [{"name": "income", "kind": "numeric", "min": 0},
                   {"name": "region", "kind": "categorical", "missing": "impute"}],
        "label": {"column": "repaid", "good": "yes", "bad": ["no"]}}


def _dataset(**changes):
    return parse_dataset_text(json.dumps({**BASE, **changes}))


@pytest.mark.parametrize("changes, message", [
    ({"fields": [{"name": "x", "kind": "text"}]}, "kind must be numeric or categorical"),
    ({"fields": [{"name": "x", "kind": "numeric", "missing": "guess"}]},
     "missing must be reject or impute"),
    ({"fields": [{"name": "x", "kind": "numeric", "min": 5, "max": 1}]}, "min 5 exceeds max 1"),
    ({"fields": [{"name": "x", "kind": "numeric"}, {"name": "x", "kind": "numeric"}]},
     "fields named twice: x"),
    ({"fields": [{"name": "event_time", "kind": "numeric"}]}, "name the request itself"),
    ({"label": {"column": "income", "good": "1"}}, "label column 'income' is also an input"),
    ({"label": {"good": "1"}}, "label needs a column and its good value"),
    ({"protected_attributes": ["sex"]}, "protected attributes that are not fields: sex"),
    ({"costs": {"bad_approved": 5}}, "costs need exactly bad_approved and good_declined"),
    ({"decision_threshold": 1.5}, r"decision_threshold must lie in \[0, 1\]"),
    ({"file": {"format": "xlsx"}}, "file format must be csv or parquet"),
    ({"file": {"format": "csv", "header": False}}, "needs \"columns\""),
    ({"model_name": "bank x!"}, "model_name must be a name"),
])
def test_a_bad_configuration_is_refused_with_the_reason(changes, message):
    with pytest.raises(ConfigError, match=message):
        _dataset(**changes)


def test_decision_threshold_comes_from_the_configuration_then_the_costs_then_half():
    assert _dataset().decision_threshold == 0.5
    costed = _dataset(costs={"bad_approved": 5, "good_declined": 1})
    assert costed.decision_threshold == pytest.approx(5 / 6)
    assert _dataset(costs={"bad_approved": 5, "good_declined": 1},
                    decision_threshold=0.7).decision_threshold == 0.7
    assert load_dataset("credit_german").decision_threshold == pytest.approx(5 / 6)


def test_a_csv_is_read_as_configured_missing_values_included(tmp_path):
    path = tmp_path / "bank.csv"
    path.write_text("region,income,repaid\nnorth,100,yes\n?,200,no\nsouth,,yes\nwest,50,\n")
    dataset = _dataset(file={"format": "csv", "header": True, "missing_values": ["?"]})
    loaded = read_data(dataset, str(path))
    # A missing region is imputed (kept as None); a missing income (reject) drops the row, and
    # so does a missing label; both are counted.
    assert loaded.records == [{"income": 100.0, "region": "north"},
                              {"income": 200.0, "region": None}]
    assert loaded.labels.tolist() == [1, 0]
    assert loaded.dropped == {"label_missing": 1, "field_missing": 1}


@pytest.mark.parametrize("text, message", [
    ("region,income,repaid\nnorth,abc,yes\n", r"bank.csv:2: income: 'abc' is not a number"),
    ("region,income,repaid\nnorth,1,maybe\n", "label 'maybe' is neither the good value"),
    ("region,income,repaid\nnorth,1\n", "bank.csv:2: expected 3 columns, got 2"),
    ("region,salary,repaid\nnorth,1,yes\n", "no column income"),
])
def test_a_data_file_that_does_not_fit_names_line_and_reason(tmp_path, text, message):
    path = tmp_path / "bank.csv"
    path.write_text(text)
    with pytest.raises(DataError, match=message):
        read_data(_dataset(), str(path))


def test_both_shipped_data_sets_read_with_their_documented_counts(german_path, crx_path):
    records, labels = load_german(german_path)
    assert len(records) == 1000 and int(labels.sum()) == 700
    crx = read_data(load_dataset("credit_crx"), crx_path)
    # 690 applicants, 307 approved; rows with a missing value in a field configured "impute"
    # are kept with None, and no configured "reject" field has missing values.
    assert len(crx.records) == 690 and int(crx.labels.sum()) == 307
    assert sum(r["A1"] is None for r in crx.records) == 12
    assert crx.records[0]["A14"] == 202.0  # written with leading zeros, read as a number
    assert crx.dropped == {"label_missing": 0, "field_missing": 0}


def test_crx_model_imputes_missing_values_inside(crx_registry, crx_path):
    from models.credit.model import predict_scores
    from transforms.credit.explain import load_credit_model

    ref = model_registry.resolve(crx_registry, "credit_crx")
    manifest = ref.manifest
    assert manifest["dataset"]["model_name"] == "credit_crx"
    assert manifest["holdout_metrics"]["decision_threshold"] == 0.5
    assert manifest["holdout_metrics"]["expected_cost_per_applicant"] is None
    assert manifest["holdout_metrics"]["auc"] > 0.8
    assert set(manifest["holdout_slices"]) == {"A1", "A2_band"}
    assert manifest["feature_statistics"]["A1"]["missing"] > 0
    model = load_credit_model(ref.path)
    kinds = load_dataset("credit_crx").kinds
    record = read_data(load_dataset("credit_crx"), crx_path).records[0]
    scores = predict_scores(model, [record, dict(record, A2=None, A1=None, A14=None)], kinds)
    assert np.all(np.isfinite(scores)) and np.all((scores > 0) & (scores < 1))
    assert scores[0] != scores[1]  # the missing indicator is an input the model uses


@pytest.mark.slow
def test_crx_scored_evaluated_and_explained_beside_german(crx_registry, crx_path, german_path,
                                                          tmp_path, offer_service, capsys):
    """Train (fixture) -> batch score a crx replay with bad lines -> evaluate with crx slices
    -> explain one crx and one German decision from the same registry."""
    crx = read_data(load_dataset("credit_crx"), crx_path)
    start = datetime.datetime(2026, 9, 7, tzinfo=datetime.UTC)
    requests = replay_requests(crx.records, 690, start, 1800, "crx")
    bad = [json.dumps(dict(requests[1], request_id="crx-bad-1", A9=None)),
           json.dumps(dict(requests[0], request_id="crx-bad-2", A15=-5))]
    path = write_jsonl(tmp_path / "crx.jsonl", requests + bad)
    truth = write_jsonl(tmp_path / "truth.jsonl", [
        {"prediction_id": r["request_id"], "label": int(label),
         "label_time": (start + datetime.timedelta(days=60)).isoformat()}
        for r, label in zip(requests, crx.labels)])
    out = str(tmp_path / "out")
    service = offer_service()
    credit_scoring.run(["--input", path, "--registry", crx_registry, "--output", out,
                        "--model_name", "credit_crx", "--sample_rate", "0.5",
                        "--offer_url", service.url, "--run_id", "crx-run"])
    responses = ds.dataset(f"{out}/responses", partitioning="hive").to_table().to_pylist()
    dead = ds.dataset(f"{out}/dead_letters", partitioning="hive").to_table().to_pylist()
    assert len(responses) + len(dead) == len(requests) + len(bad)
    # The closing summary counts what the files hold.
    summary = capsys.readouterr().out
    assert f"responses {len(responses):,}" in summary and "dead letters: validate 2" in summary
    assert f"{len(requests) + len(bad):,} inputs ended in an output or a dead letter" in summary
    assert {d["origin"].rsplit(":", 1)[1] for d in dead} == {"691", "692"}
    assert {d["model_name"] for d in dead} == {"credit_crx"}
    assert any("A9 may not be null" in d["message"] for d in dead)
    assert any("A15=-5 is out of range" in d["message"] for d in dead)
    offered = [r for r in responses if r["offer_status"] == "offered"]
    assert offered and all(r["offer_monthly_payment"] is None for r in offered)
    predictions = f"{out}/predictions/pipeline=credit_scoring/model_name=credit_crx"
    table = ds.dataset(predictions, partitioning="hive").to_table()
    assert {"A1", "A15"} <= set(table.schema.names) and "credit_amount" not in table.schema.names

    # German requests scored into the same output root land in their own folders.
    records, _ = load_german(german_path)
    german_path_jsonl = write_jsonl(tmp_path / "german.jsonl",
                                    replay_requests(records, 20, start, 3600, "de"))
    credit_scoring.run(["--input", german_path_jsonl, "--registry", crx_registry, "--output",
                        out, "--sample_rate", "1.0", "--run_id", "german-run"])
    folders = sorted(os.listdir(f"{out}/predictions/pipeline=credit_scoring"))
    assert folders == ["model_name=credit_crx", "model_name=credit_german"]
    assert sorted(os.listdir(f"{out}/responses")) == folders

    outcome = evaluate.run(["--pipeline", "credit_scoring", "--model_name", "credit_crx",
                            "--predictions", out, "--truth", truth, "--registry", crx_registry,
                            "--output", out, "--decide", "--now", "2026-12-01T00:00:00+00:00"])
    rows = outcome["rows"]
    slices = {(r["slice"], r["slice_value"]) for r in rows if r["metric"] == "size"}
    assert {("A1", "a"), ("A1", "b"), ("A2_band", "<25"), ("A2_band", "25-40"),
            ("A2_band", ">=40")} <= slices
    overall = {r["metric"]: r for r in rows if r["slice"] == "all" and r["window"] == "all"
               and not r["detail"]}
    assert overall["auc"]["value"] > 0.8 and overall["labelled"]["value"] > 300
    assert overall["expected_cost_per_applicant"]["flag"] == "not_available"
    assert outcome["decision"]["model_name"] == "credit_crx"
    assert "--config credit_crx" in outcome["decision"]["command"]

    crx_row = explain.find_rows(out, run_id="crx-run")[0]
    german_row = explain.find_rows(out, run_id="german-run")[0]
    results = explain.replay([crx_row, german_row], crx_registry)
    assert {r["model"]["name"] for r in results} == {"credit_crx", "credit_german"}
    assert all(r["match"] and r["rules"]["decision_replayed"] for r in results)


def test_scenarios_are_configuration_for_any_data_set(tmp_path, crx_path):
    from models.credit.scenarios import generate, load_scenarios, parse_scenarios

    dataset = load_dataset("credit_crx")
    path = tmp_path / "scenarios.json"
    path.write_text(json.dumps({"version": "1", "scenarios": {
        "flag_surge": {"kind": "surge", "share": 1.0, "from": {"field": "A9", "codes": ["f"]}},
        "income_up": {"kind": "scale", "field": "A15", "factor": 2.0},
        "a_worse": {"kind": "worsen_outcomes", "group": {"field": "A1", "codes": ["a"]},
                    "share": 1.0}}}))
    scenarios = load_scenarios(str(path), dataset)
    loaded = read_data(dataset, crx_path)
    active = parse_scenarios("flag_surge,income_up,a_worse", scenarios)
    requests, truth = generate(loaded.records, loaded.labels, scenarios, active, weeks=2,
                               per_week=200, shift_week=1, missing_share=0.0,
                               corrected_share=0.0, id_prefix="crx")
    before = [r for r in requests if r["request_id"].startswith("crx-w00")]
    after = [r for r in requests if r["request_id"].startswith("crx-w01")]
    assert {r["A9"] for r in after} == {"f"} and {r["A9"] for r in before} == {"t", "f"}
    labels = {t["prediction_id"]: t["label"] for t in truth}
    assert all(labels[r["request_id"]] == 0 for r in after if r["A1"] == "a")
    with pytest.raises(ValueError, match="unknown scenario"):
        parse_scenarios("amounts_inflate", scenarios)
    path.write_text(json.dumps({"version": "1", "scenarios": {
        "bad": {"kind": "scale", "field": "A1", "factor": 2.0}}}))
    with pytest.raises(ConfigError, match="scales 'A1', which is not a numeric field"):
        load_scenarios(str(path), dataset)


def test_command_line_tools_refuse_a_bad_configuration_in_words(tmp_path, capsys):
    from models.credit import replay, train

    path = tmp_path / "bank.json"
    path.write_text(json.dumps({**BASE, "fields": [{"name": "x", "kind": "text"}]}))
    assert train.main(["--config", str(path), "--registry", str(tmp_path / "r")]) == 2
    assert "kind must be numeric or categorical" in capsys.readouterr().err
    assert replay.main(["--config", "no_such_model", "--out", str(tmp_path / "o")]) == 2
    assert "no data set configuration named 'no_such_model': looked for" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "r")


def test_the_pipeline_refuses_rules_that_read_fields_the_served_data_set_lacks(
        crx_registry, tmp_path, capsys):
    from pipelines.launch import cli
    from transforms.credit.rules import default_rules_path

    requests = write_jsonl(tmp_path / "r.jsonl", ["{}"])
    status = cli(credit_scoring.run, [
        "--input", requests, "--registry", crx_registry, "--output", str(tmp_path / "out"),
        "--model_name", "credit_crx", "--rules", default_rules_path("credit_german")])
    assert status == 2
    assert "maps amount to 'credit_amount', which the served data set does not have" in \
        capsys.readouterr().err
    assert not os.path.exists(tmp_path / "out")


def _german_copy(tmp_path, changes: dict[int, tuple[int, str]]) -> str:
    """A copy of the shipped German credit file with cells replaced: line -> (column, text)."""
    from tests.conftest import GERMAN

    if not GERMAN.exists():
        pytest.skip(f"real data not found at {GERMAN}")
    lines = GERMAN.read_text().splitlines()
    for number, (column, text) in changes.items():
        cells = lines[number - 1].split()
        cells[column] = text
        lines[number - 1] = " ".join(cells)
    path = tmp_path / "german.data"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_nan_cells_in_a_numeric_column_are_missing_and_named_with_their_rows(tmp_path):
    # credit_amount (column 5) is "missing": "reject": the rows are left out, and said so.
    path = _german_copy(tmp_path, {3: (4, "nan"), 4: (4, "nan"), 9: (4, "NaN")})
    loaded = read_data(load_dataset("credit_german"), path)
    assert len(loaded.records) == 997 and loaded.dropped["field_missing"] == 3
    assert all(np.isfinite(r["credit_amount"]) for r in loaded.records)
    assert loaded.notes == (
        f"{path}: rows 3 and 4: credit_amount 'nan' is not a number, read as missing "
        f"(missing: reject, so these rows are left out)",
        f"{path}: row 9: credit_amount 'NaN' is not a number, read as missing (missing: "
        f"reject, so these rows are left out)")


def test_infinite_cells_are_refused_naming_the_field_and_every_row(tmp_path):
    path = _german_copy(tmp_path, {3: (4, "inf"), 7: (4, "inf"), 8: (1, "-Infinity")})
    with pytest.raises(DataError) as caught:
        read_data(load_dataset("credit_german"), path)
    assert str(caught.value) == (
        f"{path}: rows 3 and 7: credit_amount 'inf' is not a finite number; {path}: row 8: "
        f"duration_months '-Infinity' is not a finite number")


def test_a_model_whose_scores_are_not_finite_is_never_published(tmp_path, german_path,
                                                                monkeypatch):
    import models.credit.model
    from models.credit.train import train

    real = models.credit.model.predict_scores
    monkeypatch.setattr(models.credit.model, "predict_scores",
                        lambda *a, **k: real(*a, **k) * np.nan)  # a fault: NaN weights
    registry = str(tmp_path / "registry")
    with pytest.raises(DataError, match=r"1000 training and hold-out scores are NaN or "
                                        r"infinite: the model is not published"):
        train("credit_german", registry, german_path, epochs=1)
    assert model_registry.list_versions(registry, "credit_german") == []


def test_a_smoke_check_on_non_finite_scores_names_the_cause(credit_model_ref, tmp_path):
    import shutil

    from models.promotion import smoke_problems

    registry = tmp_path / "registry"
    folder = registry / "credit_german" / credit_model_ref.version
    shutil.copytree(os.path.dirname(credit_model_ref.path), folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["smoke"]["scores"][0] = float("nan")
    (folder / "manifest.json").write_text(json.dumps(manifest))
    ref = model_registry.resolve(str(registry), "credit_german", credit_model_ref.version)
    assert smoke_problems(ref) == [
        f"the model scores 0 of {len(manifest['smoke']['scores'])} smoke inputs as NaN or "
        f"infinite (training recorded 1): its training data or weights hold non-finite values"]


def test_a_training_snapshot_with_an_implausible_event_time_is_refused(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from models.credit.snapshots import SnapshotError, read_file_rows
    from models.provenance import sha256_file

    times = [datetime.datetime(2026, 10, 1, tzinfo=datetime.UTC),
             datetime.datetime(1, 1, 1, tzinfo=datetime.UTC)]
    path = tmp_path / "part.parquet"
    pq.write_table(pa.table({"income": [1.0, 2.0], "event_time": pa.array(
        times, pa.timestamp("us", tz="UTC"))}), path)
    with pytest.raises(SnapshotError, match=r"part.parquet: row 2: event_time "
                                            r"0001-01-01T00:00:00\+00:00 is before 1990"):
        read_file_rows((str(path), sha256_file(str(path))), ["income"])
