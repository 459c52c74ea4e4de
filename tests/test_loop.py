"""Closing the loop: aliases and their audit log, promotion guarded by smoke checks, rollback,
training snapshots from evaluated production rows, training on them, challenger against
champion, and the offer rules archive explain replays old decisions with."""

import json
import os
import shutil

import pyarrow.parquet as pq
import pytest

from models import registry as model_registry
from models.config import default_path
from models.credit import compare
from models.credit.replay import write_jsonl
from models.credit.scenarios import generate, parse_scenarios
from models.credit.train import train
from models.exit_codes import PROMOTION_REFUSED
from models.promotion import PromotionError, promote, rollback
from models.registry import RegistryError
from tests.conftest import german_scenarios, load_german, rows_of

MODEL = "credit_german"
EPOCHS = 15


@pytest.fixture(scope="module")
def loop_registry(german_path, tmp_path_factory):
    """A registry of its own (aliases move here), with v0001 trained on the base data."""
    registry = str(tmp_path_factory.mktemp("loop_registry"))
    train(MODEL, registry, german_path, seed=3, epochs=EPOCHS, command="pytest loop")
    return registry


def test_the_first_version_takes_production_after_its_smoke_checks(loop_registry):
    assert model_registry.list_aliases(loop_registry, MODEL) == {"production": "v0001"}
    [entry] = model_registry.audit_log(loop_registry, MODEL)
    assert (entry["alias"], entry["from"], entry["to"], entry["by"]) == \
        ("production", None, "v0001", "training")
    assert model_registry.resolve(loop_registry, MODEL, "production").version == "v0001"
    with pytest.raises(RegistryError, match="no alias 'shadow'"):
        model_registry.resolve(loop_registry, MODEL, "shadow")
    with pytest.raises(RegistryError, match="not an alias name"):
        model_registry.set_alias(loop_registry, MODEL, "Bad Name", "v0001", "t", "t")


def _copy_version(registry, tmp_path, name, edit):
    """Publish a copy of v0001 with its manifest edited (a stand-in for a broken training)."""
    ref = model_registry.resolve(registry, MODEL, "v0001")
    path = tmp_path / name
    shutil.copy(ref.path, path)
    manifest = edit(json.loads(json.dumps(ref.manifest)))
    return model_registry.publish(registry, MODEL, str(path), manifest)


def test_a_broken_version_is_never_promoted(loop_registry, tmp_path):
    def wrong_smoke(manifest):
        manifest["smoke"]["scores"] = [s + 0.01 for s in manifest["smoke"]["scores"]]
        return manifest

    bad = _copy_version(loop_registry, tmp_path, "model.keras", wrong_smoke)
    with pytest.raises(PromotionError, match="smoke scores differ"):
        promote(loop_registry, MODEL, bad.version)
    tampered = _copy_version(loop_registry, tmp_path, "model.keras", lambda m: m)
    with open(tampered.path, "ab") as f:
        f.write(b"tampered")
    with pytest.raises(RegistryError, match="its manifest says"):
        promote(loop_registry, MODEL, tampered.version)
    assert model_registry.list_aliases(loop_registry, MODEL)["production"] == "v0001"


def test_promote_and_rollback_move_the_alias_and_are_audited(loop_registry, tmp_path):
    good = _copy_version(loop_registry, tmp_path, "model.keras", lambda m: m)
    entry = promote(loop_registry, MODEL, good.version, reason="test", decision="d.json")
    assert (entry["from"], entry["to"], entry["decision"]) == ("v0001", good.version, "d.json")
    assert model_registry.resolve(loop_registry, MODEL, "production").version == good.version
    back = rollback(loop_registry, MODEL)
    assert (back["from"], back["to"]) == (good.version, "v0001")
    moves = [(e["from"], e["to"]) for e in model_registry.audit_log(loop_registry, MODEL)]
    assert moves[-2:] == [("v0001", good.version), (good.version, "v0001")]
    with pytest.raises(PromotionError, match="no earlier version"):
        rollback(loop_registry, MODEL, alias="shadow")


@pytest.fixture(scope="module")
def evaluated(loop_registry, german_path, tmp_path_factory):
    """Six weeks of shifted traffic scored by production, evaluated: a training snapshot."""
    from pipelines import credit_scoring, evaluate

    root = tmp_path_factory.mktemp("loop")
    records, labels = load_german(german_path)
    scenarios = german_scenarios()
    requests, truth = generate(records, labels, scenarios,
                               parse_scenarios("young_no_history_surge,amounts_inflate,"
                                               "slice_outcomes_worsen", scenarios),
                               weeks=6, per_week=400, seed=11)
    write_jsonl(requests, str(root / "requests.jsonl"))
    write_jsonl(truth, str(root / "truth.jsonl"))
    out = str(root / "out")
    credit_scoring.run(["--input", str(root / "requests.jsonl"), "--registry", loop_registry,
                        "--output", out, "--sample_rate", "0.6", "--run_id", "loop-run"])
    outcome = evaluate.run(["--predictions", out, "--truth", str(root / "truth.jsonl"),
                            "--registry", loop_registry, "--output", out, "--decide",
                            "--snapshot_id", "snap-test"])
    return outcome, out


@pytest.mark.slow
def test_evaluation_keeps_the_labelled_rows_as_a_training_snapshot(evaluated, loop_registry):
    outcome, _ = evaluated
    folder = os.path.join(loop_registry, MODEL, "snapshots", "snap-test")
    manifest = json.load(open(os.path.join(folder, "manifest.json")))
    join = outcome["summary"]["join"]
    assert manifest["rows"] == join["matched"] > 1000
    assert manifest["sampled_predictions_without_label"] == join["predictions_unmatched"] > 0
    assert sum(manifest["rows_by_model_version_and_week"]["v0001"].values()) == manifest["rows"]
    assert len(manifest["rows_by_model_version_and_week"]["v0001"]) == 6
    table = pq.read_table(os.path.join(folder, next(iter(manifest["files"]))))
    assert {"prediction_id", "label", "event_time", "model_version", "credit_amount",
            "age_years"} <= set(table.schema.names)
    decision = outcome["decision"]
    assert decision["retrain"] and decision["snapshot"] == "snap-test"
    assert "--snapshot snap-test --until " in decision["command"]


@pytest.fixture(scope="module")
def challenger(evaluated, loop_registry, german_path):
    """v-next trained on base data + the snapshot, the newest week held out."""
    outcome, _ = evaluated
    until = outcome["decision"]["window_start"]
    return train(MODEL, loop_registry, german_path, seed=3, epochs=EPOCHS,
                 snapshots=["snap-test"], until=until, command="pytest challenger"), until


@pytest.mark.slow
def test_training_on_a_snapshot_records_every_input_and_holds_the_window_out(challenger,
                                                                            loop_registry):
    ref, until = challenger
    inputs = ref.manifest["training_inputs"]
    assert [i["kind"] for i in inputs] == ["base", "snapshot"]
    assert len(inputs[0]["sha256"]) == 64 and inputs[1]["id"] == "snap-test"
    assert all(len(digest) == 64 for digest in inputs[1]["files"].values())
    assert ref.manifest["training_window"]["until"] == until
    rows = ref.manifest["training_rows"]
    assert rows["base"] == 1000 and 0 < rows["snapshots"] < rows["used"]
    # Not promoted by training: production waits for the comparison.
    assert model_registry.read_alias(loop_registry, MODEL, "production")["version"] != \
        ref.version


@pytest.mark.slow
def test_challenger_against_champion_on_the_held_out_window(challenger, loop_registry,
                                                            german_path, capsys, tmp_path):
    ref, until = challenger
    record = compare.compare(loop_registry, MODEL, ref.version)
    assert record["window"]["from"] == until and record["window"]["rows"] > 100
    figures = record["figures"]
    low, high = figures["interval"]["auc"]
    assert low <= figures["difference"]["auc"] <= high
    assert {c["rule"] for c in record["checks"]} >= {"min_labels", "auc_difference",
                                                     "expected_cost", "slice_gaps", "smoke"}
    # The CLI writes the record and, with --promote, moves production only if accepted.
    status = compare.main(["--registry", loop_registry, "--model", MODEL, "--challenger",
                           ref.version, "--promote"])
    text = capsys.readouterr().out
    assert "decision record:" in text and "champion" in text
    production = model_registry.read_alias(loop_registry, MODEL, "production")["version"]
    assert (status == 0) == (production == ref.version)
    assert status in (0, PROMOTION_REFUSED)

    # A challenger without a held-out window is refused outright; a much worse one is
    # refused by the rules.
    weak = train(MODEL, loop_registry, german_path, seed=3, epochs=1, snapshots=["snap-test"],
                 until=until, command="pytest weak challenger")
    weak_record = compare.compare(loop_registry, MODEL, weak.version, champion="v0001")
    assert not weak_record["accepted"]
    assert any(r.startswith("auc_difference") for r in weak_record["reasons"])
    # Against that weak champion, with rules that judge only AUC, labels and smoke, the
    # challenger is accepted and --promote moves production to it.
    rules = json.load(open(default_path("promotion", MODEL)))
    permissive = str(tmp_path / "rules.json")
    with open(permissive, "w") as f:
        json.dump(dict(rules, max_gap_widening=10.0, max_expected_cost_increase=10.0), f)
    model_registry.set_alias(loop_registry, MODEL, "production", weak.version, "test", "t")
    assert compare.main(["--registry", loop_registry, "--model", MODEL, "--challenger",
                         ref.version, "--rules", permissive, "--promote"]) == 0
    assert model_registry.read_alias(loop_registry, MODEL, "production")["version"] == \
        ref.version
    assert model_registry.audit_log(loop_registry, MODEL)[-1]["decision"].endswith(".json")
    unheld = train(MODEL, loop_registry, german_path, seed=3, epochs=2,
                   command="pytest no window")
    with pytest.raises(compare.CompareError, match="trained without --until"):
        compare.compare(loop_registry, MODEL, unheld.version, champion="v0001")


@pytest.mark.slow
def test_explain_replays_a_decision_under_its_archived_rules(evaluated, loop_registry,
                                                             tmp_path):
    from pipelines import explain
    from transforms.credit.rules import archive_path, default_rules_path, load_rules

    _, out = evaluated
    rows = explain.find_rows(out, run_id="loop-run")[:20]
    version = rows[0]["rules_version"]
    assert os.path.exists(archive_path(loop_registry, MODEL, version))
    # Rules edited since the run: without the archive the decisions would not be compared.
    edited = tmp_path / "rules.json"
    text = open(default_rules_path(MODEL)).read().replace('"min_score": 0.93',
                                                          '"min_score": 0.97')
    edited.write_text(text)
    assert load_rules(str(edited)).version != version
    results = explain.replay(rows, loop_registry)
    assert all(r["match"] and r["rules"]["decision_replayed"] for r in results)
    with_edited = explain.replay(rows, loop_registry, str(edited))
    assert not any(r["rules"]["decision_replayed"] for r in with_edited)


@pytest.mark.slow
def test_a_streaming_run_follows_a_moved_alias_without_losing_or_doubling(
        loop_registry, make_requests, tmp_path):
    """TestStream with a main and a side output: the first window is scored by the version the
    run started with, the second by the version the alias moved to."""
    import apache_beam as beam
    from apache_beam.ml.inference.base import ModelMetadata
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.testing.test_pipeline import TestPipeline
    from apache_beam.testing.test_stream import TestStream
    from apache_beam.testing.util import assert_that, equal_to
    from apache_beam.transforms.window import TimestampedValue

    from pipelines import credit_scoring
    from transforms.common.model_updates import ModelUpdateWindows

    start = model_registry.resolve(loop_registry, MODEL, "production")
    moved = _copy_version(loop_registry, tmp_path, "model.keras", lambda m: m)
    requests = make_requests(12, prefix="swap")
    t0 = 1_790_000_000

    def lines(batch, at):
        return [TimestampedValue((f"ts:{r['request_id']}", json.dumps(r)), at) for r in batch]

    def update(ref, at):
        return [TimestampedValue(ModelMetadata(model_id=ref.path, model_name=ref.version), at)]

    stream = (TestStream(output_tags=["main", "side"])
              .add_elements(update(start, t0 + 1), tag="side")
              .add_elements(lines(requests[:6], t0 + 2), tag="main")
              .advance_watermark_to(t0 + 10, tag="side")
              .advance_watermark_to(t0 + 10, tag="main")
              .add_elements(update(moved, t0 + 11), tag="side")
              .add_elements(lines(requests[6:], t0 + 12), tag="main")
              .advance_watermark_to(t0 + 20, tag="side")
              .advance_watermark_to(t0 + 20, tag="main")
              .advance_watermark_to_infinity(tag="side")
              .advance_watermark_to_infinity(tag="main"))
    options = PipelineOptions(["--streaming", "--registry", loop_registry, "--output",
                               str(tmp_path / "out"), "--window_secs", "10", "--sample_rate",
                               "1.0", "--run_id", "swap-test"])
    expected = ([(r["request_id"], start.version) for r in requests[:6]]
                + [(r["request_id"], moved.version) for r in requests[6:]])
    with TestPipeline(options=options) as p:
        streams = p | stream
        updates = streams["side"] | ModelUpdateWindows(10)
        config = credit_scoring.prepare(options)
        outputs = credit_scoring.build(p, config, requests=streams["main"],
                                       model_updates=updates)
        assert_that(outputs["predictions"] | beam.FlatMap(rows_of) | beam.Map(
            lambda r: (r["request_id"], r["model_version"])), equal_to(expected))
        assert_that(outputs["dead_letters"], equal_to([]), label="NothingLost")


def test_every_window_gets_one_model_update_before_it_opens():
    """Side elements are emitted ahead (a runner may read a side window before its end), one
    per window whatever the poll interval, none twice."""
    from transforms.common.model_updates import windows_ahead

    emitted, until = [], None
    for poll in (100.3, 101.3, 102.3, 103.3, 104.3, 105.3):  # polls every 1 s, windows of 2 s
        starts = windows_ahead(poll, 2, 1, until)
        assert all(start - poll >= 1.0 for start in starts[1:] if start > poll), (poll, starts)
        emitted += starts
        until = starts[-1] if starts else until
    assert emitted == [100.0, 102.0, 104.0, 106.0]
    # Polls every 60 s, windows of 10 s: every window until the next poll and half a window.
    assert windows_ahead(100.3, 10, 60, None) == [100.0 + 10 * k for k in range(7)]
    assert windows_ahead(160.3, 10, 60, 160.0) == [170.0 + 10 * k for k in range(6)]


def test_a_move_to_a_broken_or_other_schema_version_is_refused_while_serving_goes_on(
        loop_registry, tmp_path):
    from transforms.common.model_updates import _FollowAliasFn

    start = model_registry.resolve(loop_registry, MODEL, "production")
    fn = _FollowAliasFn(loop_registry, MODEL, "canary", start, smoke=True)
    fn.setup()
    [first] = list(fn.process(0))
    assert (first.model_name, first.model_id) == (start.version, start.path)

    def other_schema(manifest):
        manifest["input_schema"] = manifest["input_schema"][:-1]
        return manifest

    for edit in (other_schema, lambda m: dict(m, smoke=dict(
            m["smoke"], scores=[s + 0.5 for s in m["smoke"]["scores"]]))):
        wrong = _copy_version(loop_registry, tmp_path, "model.keras", edit)
        model_registry.set_alias(loop_registry, MODEL, "canary", wrong.version, "test", "t")
        [kept] = list(fn.process(1))
        assert kept.model_name == start.version
    good = _copy_version(loop_registry, tmp_path, "model.keras", lambda m: m)
    model_registry.set_alias(loop_registry, MODEL, "canary", good.version, "test", "t")
    [taken] = list(fn.process(2))
    assert (taken.model_name, taken.model_id) == (good.version, good.path)


@pytest.mark.slow
def test_the_beam_comparison_decides_like_the_command(challenger, loop_registry):
    from pipelines import compare as compare_job

    ref, _ = challenger
    in_process = compare.compare(loop_registry, MODEL, ref.version, champion="v0001")
    status = compare_job.run(["--registry", loop_registry, "--model_name", MODEL,
                              "--challenger", ref.version, "--champion", "v0001"])
    _, record = compare_job._newest_record(loop_registry, MODEL, ref.version)
    assert status == (0 if in_process["accepted"] else PROMOTION_REFUSED)
    assert record["window"]["rows"] == in_process["window"]["rows"]
    for side in ("champion", "challenger"):
        for name, value in in_process["figures"][side].items():
            assert record["figures"][side][name] == pytest.approx(value, abs=1e-6)
    assert record["reasons"] == in_process["reasons"]
