"""The credit pipeline: graph with assert_that, real runs into a temp dir, streaming."""

import collections
import datetime
import json
import os
import threading
import time

import apache_beam as beam
import keras
import pyarrow.dataset as ds
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import TimestampedValue

from models import registry as model_registry
from pipelines import credit_scoring
from services.bank_offers import is_poisoned
from tests.conftest import german_dataset, rows_of, write_jsonl
from transforms.common.sampling import keep_prediction
from transforms.credit.rules import default_rules_path, load_rules

pytestmark = pytest.mark.slow  # pipeline runs; the fast tier is -m 'not slow'

BAD_LINES = [
    '{"request_id": "broken", ',                                   # malformed JSON
    '["an", "array"]',                                             # not an object
    '{"request_id": "short", "event_time": "2026-11-01T00:00:00Z"}',  # missing fields
]


def _table(out, name):
    return ds.dataset(os.path.join(out, name), partitioning="hive").to_table()


def _args(registry, out, *extra):
    return ["--registry", registry, "--output", str(out), *extra]


def test_batch_graph_scores_good_requests_and_dead_letters_bad_ones(credit_registry, tmp_path,
                                                                    make_requests):
    requests = make_requests(20)
    lines = [(f"mem:{i}", json.dumps(r)) for i, r in enumerate(requests)]
    lines += [(f"bad:{i}", line) for i, line in enumerate(BAD_LINES)]
    lines += [(f"year:{year}", json.dumps(dict(requests[0], request_id=f"y{year}",
                                                event_time=f"{year}-01-01T00:00:00+00:00")))
              for year in ("0001", "9999")]
    options = PipelineOptions(_args(credit_registry, tmp_path, "--sample_rate", "1.0"))
    with TestPipeline(options=options) as p:
        config = credit_scoring.prepare(options)
        outputs = credit_scoring.build(p, config, requests=p | beam.Create(lines))
        assert_that(outputs["responses"] | "ResponseRows" >> beam.FlatMap(rows_of)
                    | beam.Map(lambda r: r["request_id"]),
                    equal_to([r["request_id"] for r in requests]), label="AllGoodAnswered")
        assert_that(outputs["dead_letters"] | beam.Map(lambda d: (d["origin"], d["stage"])),
                    equal_to([("bad:0", "parse"), ("bad:1", "parse"), ("bad:2", "validate"),
                              ("year:0001", "validate"), ("year:9999", "validate")]),
                    label="BadOnesDeadLettered")
        assert_that(outputs["predictions"] | "PredictionRows" >> beam.FlatMap(rows_of)
                    | beam.Map(
            lambda r: (r["model_version"], r["offer_status"] in ("not_requested", "no_bank"),
                       0.0 < r["score"] < 1.0)),
            equal_to([("v0001", True, True)] * 20), label="VersionedScores")


@pytest.fixture
def conservation_run(credit_registry, tmp_path, make_requests, offer_service):
    """A real batch run: 400 requests + bad lines, an offer service failing often."""
    requests = make_requests(400, "cons")
    input_path = write_jsonl(tmp_path / "requests.jsonl", requests + BAD_LINES)
    service = offer_service(fail_rate=0.3, fail_kinds=("500", "429", "timeout"),
                            hang_secs=0.6, poison_fraction=0.1, seed=11)
    out = tmp_path / "out"
    credit_scoring.run(_args(
        credit_registry, out, "--input", input_path, "--offer_url", service.url,
        "--offer_timeout_secs", "0.3", "--offer_retries", "4", "--offer_batch_size", "10",
        "--sample_rate", "0.3", "--run_id", "conservation-test"))
    return requests, out, service


def test_every_input_line_ends_in_exactly_one_output(conservation_run):
    requests, out, service = conservation_run
    responses = _table(out, "responses").to_pylist()
    dead = _table(out, "dead_letters").to_pylist()
    assert len(responses) + len(dead) == len(requests) + len(BAD_LINES)
    answered = [r["request_id"] for r in responses]
    offer_dead = [d for d in dead if d["stage"] == "offer"]
    dead_ids = [json.loads(d["raw"])["request_id"] for d in offer_dead]
    assert len(set(answered)) == len(answered)
    assert not set(answered) & set(dead_ids)
    assert set(answered) | set(dead_ids) == {r["request_id"] for r in requests}
    assert collections.Counter(d["stage"] for d in dead if d["stage"] != "offer") == \
        {"parse": 2, "validate": 1}
    # Every applicant the bank always rejects, and that was sent to it, is a dead letter.
    offered_or_failed = {r["request_id"] for r in responses if r["offer_status"] == "offered"}
    offered_or_failed |= set(dead_ids)
    poisoned = {i for i in offered_or_failed if is_poisoned(i, 0.1)}
    assert poisoned and poisoned <= set(dead_ids)
    # The service really failed calls, and the retries got most of them through.
    stats = service.stats()
    assert stats.get("failed_500", 0) + stats.get("failed_429", 0) > 0
    assert sum(r["offer_status"] == "offered" for r in responses) > 0
    for d in offer_dead:
        assert d["error_class"] and d["message"] and d["run_id"] == "conservation-test"


def test_sampled_predictions_schema_partitions_and_sample(conservation_run, credit_model_ref):
    requests, out, _ = conservation_run
    table = _table(out, "predictions")
    names = set(table.schema.names)
    assert set(german_dataset().field_names) <= names
    assert {"prediction_id", "event_time", "processed_at", "pipeline", "run_mode", "run_id",
            "model_name", "model_version", "model_sha256", "code_version", "rules_version",
            "score", "decision", "bank", "offer_status", "offer_apr", "latency_ms", "dt"} <= names
    rows = table.to_pylist()
    all_ids = {r["request_id"] for r in requests}
    assert {r["prediction_id"] for r in rows} == {i for i in all_ids if keep_prediction(i, 0.3)}
    row = rows[0]
    assert row["pipeline"] == "credit_scoring" and row["run_mode"] == "batch"
    assert row["model_version"] == "v0001" and row["model_sha256"] == credit_model_ref.sha256
    assert row["rules_version"] == load_rules(default_rules_path("credit_german")).version
    assert row["dt"] == row["event_time"].strftime("%Y-%m-%d")
    assert row["latency_ms"] >= 0
    # A response and its sampled prediction row describe the same moment.
    processed = {r["request_id"]: r["processed_at"]
                 for r in _table(out, "responses").to_pylist()}
    assert all(processed[r["prediction_id"]] == r["processed_at"] for r in rows
               if r["prediction_id"] in processed)
    folders = {os.path.relpath(d, out / "predictions") for d, _, fs in os.walk(out / "predictions")
               if fs}
    prefix = "pipeline=credit_scoring/model_name=credit_german/model_version=v0001/dt=2026-1"
    assert folders and all(f.startswith(prefix) for f in folders)


def test_a_model_that_cannot_score_sends_requests_to_dead_letters(tmp_path, make_requests):
    # A model whose inputs do not match the request schema: every batch fails in the model.
    inputs = keras.Input(shape=(1,), name="unrelated", dtype="float32")
    model = keras.Model(inputs, keras.layers.Dense(1)(inputs))
    model.save(tmp_path / "model.keras")
    registry = str(tmp_path / "registry")
    model_registry.publish(registry, "credit_german", str(tmp_path / "model.keras"),
                           {"dataset": german_dataset().to_dict()})
    input_path = write_jsonl(tmp_path / "requests.jsonl", make_requests(5))
    # Published without an alias (no smoke inputs to pass): served by version.
    credit_scoring.run(_args(registry, tmp_path / "out", "--input", input_path,
                             "--model_version", "latest"))
    dead = _table(tmp_path / "out", "dead_letters").to_pylist()
    assert [d["stage"] for d in dead] == ["inference"] * 5
    # Each request was scored again alone before it was given up; the reason is in words.
    for d in dead:
        assert d["error_class"] == "ValueError", d
        assert d["message"].startswith("the model could not score this request: ")
        assert "Traceback" not in d["message"] and "\n" not in d["message"]
    assert not os.path.exists(tmp_path / "out" / "responses")


def test_streaming_with_test_stream_writes_windowed_files(credit_registry, tmp_path,
                                                          make_requests):
    requests = make_requests(12, "ts")
    t0 = datetime.datetime(2026, 11, 27, 12, 0, tzinfo=datetime.UTC).timestamp()

    def burst(rs, at):
        return [TimestampedValue((f"ts:{r['request_id']}", json.dumps(r)), at) for r in rs]

    # Processing time advances too: the model's batching flushes on a processing-time timer
    # (max_batch_duration_secs), as it would in production.
    stream = (TestStream()
              .add_elements(burst(requests[:6], t0 + 1))
              .advance_processing_time(5)
              .advance_watermark_to(t0 + 15)
              .add_elements(burst(requests[6:], t0 + 16) + [
                  TimestampedValue(("ts:bad", BAD_LINES[0]), t0 + 16)])
              .advance_processing_time(5)
              .advance_watermark_to(t0 + 25)
              .advance_watermark_to_infinity())
    options = PipelineOptions(_args(credit_registry, tmp_path, "--streaming",
                                    "--window_secs", "10", "--sample_rate", "1.0",
                                    "--max_batch_duration_secs", "1", "--run_id", "stream-test"))
    with TestPipeline(options=options) as p:
        config = credit_scoring.prepare(options)
        outputs = credit_scoring.build(p, config, requests=p | stream)
        assert_that(outputs["responses"] | beam.FlatMap(rows_of)
                    | beam.Map(lambda r: (r["request_id"], r["run_mode"])),
                    equal_to([(r["request_id"], "streaming") for r in requests]))
    response_files = sorted(f for _, _, fs in os.walk(tmp_path / "responses") for f in fs)
    windows = sorted({f.split("-p0")[0] for f in response_files})
    assert windows == ["stream-test-20261127T120000Z-20261127T120010Z",
                       "stream-test-20261127T120010Z-20261127T120020Z"]
    assert _table(tmp_path, "responses").num_rows == 12
    assert _table(tmp_path, "predictions").num_rows == 12
    assert _table(tmp_path, "dead_letters").to_pylist()[0]["origin"] == "ts:bad"


def test_streaming_picks_up_files_landing_in_a_watched_directory(credit_registry, tmp_path,
                                                                 make_requests):
    landing = tmp_path / "landing"
    landing.mkdir()
    out = tmp_path / "out"
    batches = [make_requests(30, "w1"), make_requests(30, "w2")]
    errors = []

    def run_pipeline():
        try:
            credit_scoring.run(_args(credit_registry, out, "--streaming", "--input_dir",
                                     str(landing), "--poll_secs", "0.5",
                                     "--stop_after_secs", "18", "--window_secs", "5"))
        except Exception as error:  # noqa: BLE001 - surfaced by the assertion below
            errors.append(error)

    thread = threading.Thread(target=run_pipeline)
    thread.start()
    for i, batch in enumerate(batches):
        time.sleep(4)
        write_jsonl(landing / f".part{i}.tmp", batch)  # written elsewhere, then renamed
        os.rename(landing / f".part{i}.tmp", landing / f"part{i}.jsonl")
    thread.join(timeout=120)
    assert not thread.is_alive() and not errors
    answered = _table(out, "responses").column("request_id").to_pylist()
    # Every request of both files exactly once, although each poll lists both files again.
    assert sorted(answered) == sorted(r["request_id"] for b in batches for r in b)


@pytest.mark.parametrize("extra, message", [
    (["--input", "a.jsonl", "--streaming"], "--input is a batch source"),
    (["--input_dir", "landing"], "--input_dir is a streaming source and needs --streaming"),
    (["--input", "a", "--input_dir", "b", "--streaming"], "give one source"),
    (["--sample_rate", "2"], r"--sample_rate must lie in \[0, 1\]"),
    (["--input", "a", "--run_mode", "streaming"], "--run_mode streaming needs --streaming"),
    (["--input", "a", "--dedup_buckets", "0"], "--dedup_buckets must be at least 1"),
    (["--input", "a", "--min_batch_size", "9000"], "--min_batch_size exceeds --max_batch_size"),
])
def test_conflicting_options_are_rejected_with_the_flags_named(extra, message):
    with pytest.raises(ValueError, match=message):
        credit_scoring.resolve(PipelineOptions(extra))


def test_help_lists_this_pipelines_options(capsys):
    with pytest.raises(SystemExit) as exit_info:
        credit_scoring.run(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--input_dir", "--input_topic", "--offer_url", "--sample_rate",
                 "--model_version", "--window_secs"):
        assert flag in text


def test_the_run_configuration_is_resolved_once_frozen_and_leaves_the_options_alone(
        credit_registry, tmp_path):
    import dataclasses

    flags = ["--input", "x.jsonl", "--registry", credit_registry, "--output", str(tmp_path),
             "--run_mode", "backfill", "--run_id", "backfill-test", "--model_version", "v0001"]
    options = PipelineOptions(flags)
    before = options.get_all_options(drop_default=False)
    config = credit_scoring.prepare(options)
    assert options.get_all_options(drop_default=False) == before  # nothing written back
    assert config.output == f"{tmp_path}/backfills/backfill-test"
    assert (config.run_mode, config.model_name, config.max_batch_size) == (
        "backfill", "credit_german", 2048)
    served = config.models["served"]
    assert (served.name, served.version) == ("credit_german", "v0001")
    assert "shadow" not in config.models  # a backfill replays with no shadow unless asked
    notes = " ".join(config.launch_notes)
    assert "sha256 checked" in notes and "archived at" in notes
    assert config.row_context()["models"] == {served.path: ("credit_german", "v0001",
                                                            served.sha256)}
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.run_id = "another"
    # Without --run_id the id is minted once, named by the run mode.
    minted = credit_scoring.resolve(PipelineOptions(["--input", "x.jsonl"]))
    assert minted.run_id.startswith("batch-") and minted.window_secs == 0


def test_without_offer_rules_the_run_decides_at_the_threshold_and_asks_no_bank(
        credit_registry, tmp_path, make_requests, offer_service, monkeypatch, capsys):
    """Configuration the docs call optional is optional: a model without
    <config>/offer_rules/<model>.json is scored and decided (at its data set's threshold, no
    refer band) with no offer asked, the run says so, and the decisions replay."""
    import shutil

    from models import config as model_config
    from pipelines import explain

    bare = tmp_path / "config"
    shutil.copytree(model_config.SHIPPED_DIR, bare)
    (bare / "offer_rules" / "credit_german.json").unlink()
    monkeypatch.setattr(model_config, "SHIPPED_DIR", bare)
    service = offer_service()
    write_jsonl(tmp_path / "requests.jsonl", make_requests(40))
    out = tmp_path / "out"
    credit_scoring.run(_args(credit_registry, out, "--input", str(tmp_path / "requests.jsonl"),
                             "--offer_url", service.url, "--sample_rate", "1.0",
                             "--run_id", "no-rules"))
    assert "no offer rules (" in capsys.readouterr().out
    responses = _table(out, "responses").to_pylist()
    threshold = german_dataset().decision_threshold
    assert len(responses) == 40 and service.stats().get("calls", 0) == 0
    assert {r["rules_version"] for r in responses} == {"none"}
    assert {r["offer_status"] for r in responses} == {"not_requested"}
    assert all((r["decision"] == "approve") == (r["score"] >= threshold) for r in responses)
    assert {r["decision"] for r in responses} <= {"approve", "decline"}
    rows = explain.find_rows(str(out), run_id="no-rules")
    assert all(r["match"] for r in explain.replay(rows, credit_registry))
