"""Shadow scoring: a candidate version scores the same requests as the one in service; its
answers reach only the sampled prediction rows, and a shadow that is broken changes nothing."""

import json
import os
import shutil

import apache_beam as beam
import keras
import pyarrow as pa
import pyarrow.dataset as ds
import pytest
from apache_beam.ml.inference.tensorflow_inference import TFModelHandlerNumpy
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from models import registry as model_registry
from models.credit.handler import CreditInference
from models.credit.model import predict_scores
from models.credit.shadow import choose_shadow
from models.exit_codes import PROMOTION_REFUSED
from models.metrics import roc_auc
from models.promotion import promote
from pipelines import credit_scoring
from tests.conftest import german_dataset, write_jsonl
from transforms.credit.shadow import ShadowScores

pytestmark = pytest.mark.slow

# Columns that differ between any two runs (clock readings, run ids), and the shadow's own.
CLOCK = {"processed_at", "latency_ms", "run_id", "received_at"}
SHADOW = {"shadow_model_version", "shadow_model_sha256", "shadow_score", "shadow_decision"}


@pytest.fixture(scope="module")
def shadow_registry(credit_registry, german_path, tmp_path_factory):
    """v0001 in production, v0002 (another training) as the shadow, v0003 damaged."""
    from models.credit.train import train

    registry = str(tmp_path_factory.mktemp("shadow") / "registry")
    shutil.copytree(credit_registry, registry)
    train("credit_german", registry, german_path, seed=21, epochs=6, command="pytest shadow")
    promote(registry, "credit_german", "v0001", by="pytest", reason="champion")
    promote(registry, "credit_german", "v0002", alias="shadow", by="pytest",
            reason="candidate on live traffic")
    train("credit_german", registry, german_path, seed=22, epochs=2, command="pytest broken")
    with open(os.path.join(registry, "credit_german", "v0003", "model.keras"), "r+b") as f:
        f.truncate(1000)
    return registry


def _run(registry, requests_path, out, *extra):
    credit_scoring.run(["--registry", registry, "--input", requests_path, "--output", str(out),
                        "--sample_rate", "1.0", "--model_version", "production", *extra])
    return {name: sorted(ds.dataset(out / name, partitioning="hive").to_table().to_pylist(),
                         key=lambda r: r.get("prediction_id") or r.get("request_id") or
                         r["dead_letter_id"])
            for name in ("responses", "predictions", "dead_letters")
            if (out / name).exists()}


def _without(rows, columns):
    return [{k: v for k, v in r.items() if k not in columns} for r in rows]


@pytest.fixture(scope="module")
def runs(shadow_registry, german_records, tmp_path_factory):
    from models.credit.replay import client_value

    folder = tmp_path_factory.mktemp("shadow_runs")
    records, _ = german_records
    requests = [{"request_id": f"sh-{i:04d}", "event_time": "2026-11-02T10:00:00+00:00",
                 **{k: client_value(v) for k, v in records[i].items()}} for i in range(150)]
    path = write_jsonl(folder / "requests.jsonl", requests + ['{"broken": '])
    return {
        "requests": requests,
        "none": _run(shadow_registry, path, folder / "none", "--shadow_version", "none"),
        "alias": _run(shadow_registry, path, folder / "alias"),
        "alias_out": folder / "alias",
        "broken": _run(shadow_registry, path, folder / "broken", "--shadow_version", "v0003"),
    }


def test_the_shadow_alias_fills_the_shadow_columns_with_its_own_scores(runs, shadow_registry):
    shadow = model_registry.resolve(shadow_registry, "credit_german", "v0002")
    rows = runs["alias"]["predictions"]
    assert len(rows) == 150
    assert {(r["model_version"], r["shadow_model_version"], r["shadow_model_sha256"])
            for r in rows} == {("v0001", "v0002", shadow.sha256)}
    expected = predict_scores(keras.models.load_model(shadow.path), rows,
                              german_dataset().kinds)
    for row, score in zip(rows, expected):
        assert row["shadow_score"] == pytest.approx(float(score), abs=1e-6)
        assert row["shadow_decision"] in ("approve", "refer", "decline")
    assert any(r["shadow_decision"] != r["decision"] for r in rows) or \
        any(abs(r["shadow_score"] - r["score"]) > 1e-3 for r in rows)


def test_without_a_shadow_the_columns_are_null(runs):
    for row in runs["none"]["predictions"]:
        assert all(row[c] is None for c in SHADOW)


@pytest.mark.parametrize("run", ["alias", "broken"])
def test_responses_offers_decisions_and_dead_letters_do_not_change(runs, run):
    base, other = runs["none"], runs[run]
    assert _without(other["responses"], CLOCK) == _without(base["responses"], CLOCK)
    assert _without(other["predictions"], CLOCK | SHADOW) == \
        _without(base["predictions"], CLOCK | SHADOW)
    assert [(d["stage"], d["origin"], d["raw"]) for d in other["dead_letters"]] == \
        [(d["stage"], d["origin"], d["raw"]) for d in base["dead_letters"]]


def test_a_broken_shadow_is_left_out_with_its_reason(runs, shadow_registry):
    assert all(r["shadow_score"] is None for r in runs["broken"]["predictions"])
    champion = model_registry.resolve(shadow_registry, "credit_german", "production")
    shadow, why = choose_shadow(shadow_registry, champion, "v0003")
    assert shadow is None and why.startswith("shadow v0003 left out: RegistryError: model "
                                             "credit_german v0003:")
    assert choose_shadow(shadow_registry, champion, "production")[1] == \
        "no shadow: production is v0001, the version in service"
    assert choose_shadow(shadow_registry, champion, "none") == \
        (None, "no shadow (--shadow_version none)")


class FailingInference(CreditInference):
    def __call__(self, model, batch, inference_args=None, model_id=None):
        raise RuntimeError("shadow engine crashed")


def test_a_shadow_that_fails_to_score_passes_the_rows_on_unchanged(shadow_registry, runs):
    from transforms.credit.rules import default_rules_path, load_rules

    shadow = model_registry.resolve(shadow_registry, "credit_german", "v0002")
    rows = runs["none"]["predictions"][:20]
    batch = pa.RecordBatch.from_pylist(rows)
    handler = TFModelHandlerNumpy(shadow.path, inference_fn=FailingInference(
        german_dataset().kinds), min_batch_size=1, max_batch_size=1)
    with TestPipeline() as p:
        out = (p | beam.Create([batch]) | ShadowScores(
            handler, ("v0002", shadow.sha256), load_rules(default_rules_path("credit_german"))))
        assert_that(out | beam.FlatMap(lambda b: b.to_pylist())
                    | beam.Map(lambda r: json.dumps(r, default=str, sort_keys=True)),
                    equal_to([json.dumps(r, default=str, sort_keys=True) for r in rows]))


def test_evaluation_scores_the_shadow_beside_the_champion_on_the_same_rows(
        runs, shadow_registry, german_records, tmp_path):
    from pipelines import evaluate

    _, labels = german_records
    truth = tmp_path / "truth.jsonl"
    write_jsonl(truth, [{"prediction_id": r["request_id"], "label": int(labels[i]),
                         "label_time": "2026-12-01T00:00:00+00:00"}
                        for i, r in enumerate(runs["requests"])])
    outcome = evaluate.run(["--pipeline", "credit_scoring", "--predictions",
                            str(runs["alias_out"]), "--truth", str(truth), "--registry",
                            shadow_registry, "--output", str(tmp_path / "eval"),
                            "--run_id", "eval-shadow"])
    rows = ds.dataset(tmp_path / "eval" / "evaluation" / "metrics",
                      partitioning="hive").to_table().to_pylist()
    figures = {(r["model_version"], r["role"], r["metric"]): r for r in rows
               if r["window"] == "all" and r["slice"] == "all" and r["detail"] is None}
    served, shadow = figures[("v0001", "served", "auc")], figures[("v0002", "shadow", "auc")]
    assert served["count"] == shadow["count"] == 150  # the same labelled rows
    predictions = runs["alias"]["predictions"]
    by_id = {r["request_id"]: int(labels[i]) for i, r in enumerate(runs["requests"])}
    truth_labels = [by_id[r["prediction_id"]] for r in predictions]
    assert shadow["value"] == pytest.approx(
        roc_auc(truth_labels, [r["shadow_score"] for r in predictions]), abs=1e-12)
    assert served["value"] == pytest.approx(
        roc_auc(truth_labels, [r["score"] for r in predictions]), abs=1e-12)
    # Slices and drift for both, and the retraining figures judge the served version only.
    for role, version in (("served", "v0001"), ("shadow", "v0002")):
        assert any(r["role"] == role and r["model_version"] == version
                   and r["metric"] == "approval_rate_diff" for r in rows)
        assert any(r["role"] == role and r["model_version"] == version
                   and r["slice"] == "drift" for r in rows), role
    report = open(outcome["report"], encoding="utf-8").read()
    assert "v0002 (shadow)" in report and "v0001" in report


def test_the_offers_api_writes_the_shadow_beside_its_own_answer(shadow_registry, german_records,
                                                                offer_service, tmp_path):
    from models.credit.replay import client_value
    from services.offers_api import OffersService

    records, _ = german_records
    answers = {}
    for name, shadow in (("with", None), ("without", "none")):
        service = OffersService(shadow_registry, "credit_german", "production",
                                offer_service().url, str(tmp_path / name), sample_rate=1.0,
                                shadow_version=shadow)
        body = {"request_id": "online-sh-1", "event_time": "2026-11-20T10:00:00+00:00",
                **{k: client_value(v) for k, v in records[3].items()}}
        answers[name] = service.answer(json.dumps(body).encode(), 2000)
        service.writer.close()
    # The answer is the champion's either way; only the sampled row differs.
    strip = {"processed_at", "latency_ms", "offer_id"}
    assert answers["with"][0] == answers["without"][0] == 200
    assert {k: v for k, v in answers["with"][1].items() if k not in strip} == \
        {k: v for k, v in answers["without"][1].items() if k not in strip}
    [with_shadow] = ds.dataset(tmp_path / "with" / "predictions",
                               partitioning="hive").to_table().to_pylist()
    [without] = ds.dataset(tmp_path / "without" / "predictions",
                           partitioning="hive").to_table().to_pylist()
    assert with_shadow["shadow_model_version"] == "v0002" and with_shadow["shadow_score"] > 0
    assert without["shadow_model_version"] is None and without["shadow_score"] is None


def test_the_comparison_can_judge_on_the_shadows_live_rows(runs, shadow_registry,
                                                           german_records, tmp_path):
    from pipelines import compare as compare_job

    _, labels = german_records
    truth = tmp_path / "truth.jsonl"
    write_jsonl(truth, [{"prediction_id": r["request_id"], "label": int(labels[i]),
                         "label_time": "2026-12-01T00:00:00+00:00"}
                        for i, r in enumerate(runs["requests"])])
    status = compare_job.run(["--registry", shadow_registry, "--model_name", "credit_german",
                              "--challenger", "v0002", "--shadow_evidence",
                              str(runs["alias_out"]), "--shadow_truth", str(truth)])
    _, record = compare_job._newest_record(shadow_registry, "credit_german", "v0002")
    assert status in (0, PROMOTION_REFUSED)
    assert record["window"]["rows"] == 150
    assert record["window"]["evidence"].startswith("live requests v0002 scored as the shadow "
                                                   "of v0001")
    rows = runs["alias"]["predictions"]
    by_id = {r["request_id"]: int(labels[i]) for i, r in enumerate(runs["requests"])}
    truth_labels = [by_id[r["prediction_id"]] for r in rows]
    assert record["figures"]["challenger"]["auc"] == pytest.approx(
        roc_auc(truth_labels, [r["shadow_score"] for r in rows]), abs=1e-12)
    assert record["figures"]["champion"]["auc"] == pytest.approx(
        roc_auc(truth_labels, [r["score"] for r in rows]), abs=1e-12)


def test_a_streaming_run_writes_the_shadow_beside_the_champion(shadow_registry, make_requests,
                                                               tmp_path):
    import datetime

    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.testing.test_stream import TestStream
    from apache_beam.transforms.window import TimestampedValue

    from tests.conftest import rows_of

    requests = make_requests(10, "shs")
    t0 = datetime.datetime(2026, 11, 27, 12, 0, tzinfo=datetime.UTC).timestamp()
    stream = (TestStream()
              .add_elements([TimestampedValue((f"ts:{r['request_id']}", json.dumps(r)), t0 + 1)
                             for r in requests])
              .advance_watermark_to(t0 + 15)
              .advance_watermark_to_infinity())
    options = PipelineOptions(["--registry", shadow_registry, "--output", str(tmp_path),
                               "--streaming", "--window_secs", "10", "--sample_rate", "1.0",
                               "--model_version", "v0001", "--shadow_version", "shadow"])
    with TestPipeline(options=options) as p:
        config = credit_scoring.prepare(options)
        outputs = credit_scoring.build(p, config, requests=p | stream)
        assert_that(outputs["predictions"] | beam.FlatMap(rows_of) | beam.Map(
            lambda r: (r["prediction_id"], r["model_version"], r["shadow_model_version"],
                       r["shadow_score"] is not None)),
            equal_to([(r["request_id"], "v0001", "v0002", True) for r in requests]))
        # (The responses' batches never pass the shadow; their files hold no shadow column.)
        assert_that(outputs["responses"] | "ResponseRows" >> beam.FlatMap(rows_of)
                    | beam.Map(lambda r: r.get("shadow_score")), equal_to([None] * 10),
                    label="NoShadowInResponses")
