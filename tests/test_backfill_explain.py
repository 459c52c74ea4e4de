"""Backfills (pinned version, run-specific output replaced on re-run) and replay of old
decisions (exact model version, parity of every sampled prediction)."""

import datetime
import glob
import os

import pyarrow.dataset as ds
import pytest

from models.credit.replay import replay_requests
from pipelines import credit_scoring, explain, radar_qc
from tests.conftest import load_german, write_jsonl

pytestmark = pytest.mark.slow  # pipeline runs; the fast tier is -m 'not slow'


def _backfill(registry, requests, out, *extra):
    return credit_scoring.run(["--input", requests, "--registry", registry, "--output", out,
                               "--run_mode", "backfill", "--run_id", "backfill-2026-11-credit",
                               "--model_version", "v0001", "--sample_rate", "1.0", *extra])


@pytest.fixture(scope="module")
def credit_backfill(credit_registry, german_path, tmp_path_factory):
    """Two years old requests, one every ~3 hours over November 2024, re-scored."""
    root = tmp_path_factory.mktemp("backfill")
    records, _ = load_german(german_path)
    start = datetime.datetime(2024, 11, 1, tzinfo=datetime.UTC)
    path = write_jsonl(root / "requests.jsonl",
                       replay_requests(records, 240, start, 10_000, "old"))
    _backfill(credit_registry, path, str(root / "out"))
    return str(root / "out"), path


def _rows(out, name):
    return ds.dataset(os.path.join(out, name), partitioning="hive").to_table().to_pylist()


def test_backfill_writes_to_its_own_folder_and_records_mode_and_run(credit_backfill):
    out, _ = credit_backfill
    backfill = f"{out}/backfills/backfill-2026-11-credit"
    predictions = _rows(backfill, "predictions")
    assert len(predictions) == 240
    assert {(r["run_mode"], r["run_id"], r["model_version"]) for r in predictions} == {
        ("backfill", "backfill-2026-11-credit", "v0001")}
    assert {r["dt"] for r in predictions} >= {"2024-11-01", "2024-11-28"}  # event dates
    assert len(_rows(backfill, "responses")) == 240
    assert not os.path.exists(f"{out}/predictions")  # nothing outside the backfill's folder


def test_rerunning_a_backfill_replaces_its_output(credit_backfill, credit_registry):
    out, requests = credit_backfill
    backfill = f"{out}/backfills/backfill-2026-11-credit"
    stale = (f"{backfill}/predictions/pipeline=credit_scoring/model_name=credit_german/"
             f"model_version=v0001/dt=2024-11-01/stale.parquet")
    with open(stale, "wb") as f:
        f.write(b"left over from an older run")
    files_before = sorted(glob.glob(f"{backfill}/**/*.parquet", recursive=True))
    _backfill(credit_registry, requests, out)
    assert not os.path.exists(stale)
    assert sorted(glob.glob(f"{backfill}/**/*.parquet", recursive=True)) == [
        f for f in files_before if f != stale]
    assert len(_rows(backfill, "predictions")) == 240  # replaced, not doubled


def test_a_backfill_needs_a_run_id_and_a_pinned_version(credit_registry, tmp_path):
    with pytest.raises(ValueError, match="needs --run_id"):
        credit_scoring.run(["--input", "x.jsonl", "--registry", credit_registry,
                            "--run_mode", "backfill", "--model_version", "v0001"])
    with pytest.raises(ValueError, match="pinned --model_version"):
        radar_qc.run(["--input", "x", "--run_mode", "backfill", "--run_id", "b",
                      "--model_version", "latest"])


def test_replay_parity_of_every_sampled_credit_prediction(credit_backfill, credit_registry):
    out, _ = credit_backfill
    rows = explain.find_rows(f"{out}/backfills/backfill-2026-11-credit")
    results = explain.replay(rows, credit_registry)
    assert len(results) == 240 and all(r["match"] for r in results)
    assert max(r["score_difference"] for r in results) <= 1e-6
    assert all(r["rules"]["decision_replayed"] for r in results)
    assert explain.main(["--all", "--predictions", f"{out}/backfills/backfill-2026-11-credit",
                         "--registry", credit_registry]) == 0


def test_explain_one_prediction_prints_versions_and_outputs(credit_backfill, credit_registry,
                                                            capsys):
    out, _ = credit_backfill
    status = explain.main(["--prediction_id", "old-0000007", "--predictions",
                           f"{out}/backfills/backfill-2026-11-credit", "--registry",
                           credit_registry])
    text = capsys.readouterr().out
    assert status == 0
    for expected in ("prediction old-0000007 (credit_scoring", "credit_german v0001 sha256",
                     "rules:    stored 2026", "score ", "decision ", "=> MATCH",
                     "in service when scored (", "): production v0001\n"):
        assert expected in text


def test_explain_says_which_version_was_in_production_when_a_row_was_scored():
    """From the audit trail, at the row's processed_at; a backfill scored by another version
    on purpose says so."""
    import datetime

    moves = [{"seq": 1, "time": "2026-11-01T00:00:00+00:00", "alias": "production",
              "to": "v0001"},
             {"seq": 2, "time": "2026-11-10T00:00:00+00:00", "alias": "shadow", "to": "v0002"},
             {"seq": 3, "time": "2026-11-20T00:00:00+00:00", "alias": "production",
              "to": "v0002"}]
    scored = {"processed_at": datetime.datetime(2026, 11, 15, tzinfo=datetime.UTC)}
    service = explain.in_service(moves, scored)
    assert service == {"at": "2026-11-15T00:00:00+00:00", "production": "v0001",
                       "shadow": "v0002"}
    assert explain.in_service(moves, {"processed_at": datetime.datetime(2026, 10, 1)}) == {
        "at": "2026-10-01T00:00:00+00:00"}
    result = {"prediction_id": "p1", "pipeline": "credit_scoring", "event_time": "e",
              "run_id": "r", "run_mode": "backfill", "in_service": service,
              "model": {"name": "m", "version": "v0002", "sha256": "0" * 64},
              "code": {"stored": "c", "current": "c"}, "stored": {}, "replayed": {},
              "match": True}
    assert ("  in service when scored (2026-11-15T00:00:00+00:00): production v0001, shadow "
            "v0002 (this row was scored by v0002: run mode backfill)") in explain.describe(result)


def test_a_model_file_that_changed_is_refused(credit_backfill, credit_registry):
    out, _ = credit_backfill
    row = explain.find_rows(f"{out}/backfills/backfill-2026-11-credit", "old-0000001")[0]
    with pytest.raises(explain.ExplainError, match="the prediction was made by"):
        explain.load_model(credit_registry, dict(row, model_sha256="0" * 64))
    results = explain.replay([dict(row, model_version="v0042")], credit_registry)
    assert not results[0]["match"] and "no complete version" in results[0]["error"]


def test_replay_parity_of_radar_masks_on_a_real_volume(radar_registry, klbb_path, tmp_path):
    out = str(tmp_path / "out")
    radar_qc.run(["--input", klbb_path, "--registry", radar_registry, "--output", out,
                  "--sample_rate", "1.0", "--run_id", "radar-replay"])
    rows = explain.find_rows(out, run_id="radar-replay", pipeline="radar_qc")
    assert len(rows) >= 5
    results = explain.replay(rows, radar_registry)
    assert all(r["match"] and r["differing_gates"] == 0 for r in results)
