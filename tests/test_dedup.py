"""Exactly-once effects under at-least-once delivery: one request id, one answer, one quote."""

import datetime
import json

import apache_beam as beam
import pyarrow as pa
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import TimestampedValue

from pipelines import credit_scoring
from tests.conftest import rows_of
from transforms.credit.dedup import CONFLICT, DUPLICATE, first_arrivals, verdict
from transforms.credit.offers import OfferCaller

T0 = datetime.datetime(2026, 11, 1, tzinfo=datetime.UTC)


def _row(request_id, origin, minutes=0, amount=1000.0):
    return {"request_id": request_id, "event_time": T0 + datetime.timedelta(minutes=minutes),
            "received_at": T0, "origin": origin, "credit_amount": amount}


def test_the_earliest_event_time_then_the_first_origin_wins():
    rows = [_row("a", "f2:1"), _row("a", "f1:9"), _row("b", "f1:1", minutes=5),
            _row("b", "f2:2", minutes=1, amount=5.0), _row("c", "f1:3")]
    kept, later = first_arrivals(pa.Table.from_pylist(rows))
    assert sorted((r["request_id"], r["origin"]) for r in kept.to_pylist()) == [
        ("a", "f1:9"), ("b", "f2:2"), ("c", "f1:3")]
    verdicts = {(row["origin"], winner["origin"], verdict(row, winner, ("credit_amount",)))
                for row, winner in later}
    assert verdicts == {("f2:1", "f1:9", DUPLICATE), ("f1:1", "f2:2", CONFLICT)}


def _args(registry, out, *extra):
    return ["--registry", registry, "--output", str(out), "--sample_rate", "1.0", *extra]


@pytest.mark.slow
def test_batch_answers_each_request_id_once_and_dead_letters_the_rest(
        credit_registry, tmp_path, make_requests):
    requests = make_requests(10, "dd")
    changed = dict(requests[1], credit_amount=requests[1]["credit_amount"] + 100)
    earlier = dict(requests[2], event_time=(datetime.datetime.fromisoformat(
        requests[2]["event_time"]) - datetime.timedelta(hours=1)).isoformat())
    lines = [(f"a:{i}", json.dumps(r)) for i, r in enumerate(requests)]
    lines += [("b:0", json.dumps(requests[0])), ("b:1", json.dumps(changed)),
              ("b:2", json.dumps(earlier)), ("c:0", json.dumps(requests[0]))]
    options = PipelineOptions(_args(credit_registry, tmp_path))
    with TestPipeline(options=options) as p:
        config = credit_scoring.prepare(options)
        outputs = credit_scoring.build(p, config, requests=p | beam.Create(lines))
        answered = outputs["responses"] | beam.FlatMap(rows_of)
        assert_that(answered | beam.Map(lambda r: r["request_id"]),
                    equal_to([r["request_id"] for r in requests]), label="OncePerId")
        assert_that(outputs["dead_letters"] | beam.Map(
            lambda d: (d["origin"], d["stage"], d["error_class"])), equal_to([
                ("b:0", "duplicate", "DuplicateRequest"),
                ("c:0", "duplicate", "DuplicateRequest"),
                ("b:1", "conflict", "ConflictingRequest"),
                ("a:2", "conflict", "ConflictingRequest")]), label="LaterArrivals")
        # The earlier event of request 2 is the one answered.
        assert_that(answered | beam.Filter(lambda r: r["request_id"] == requests[2][
            "request_id"]) | beam.Map(lambda r: r["event_time"].isoformat()),
            equal_to([earlier["event_time"]]), label="EarliestWins")


@pytest.mark.slow
def test_streaming_remembers_ids_for_the_horizon_only(credit_registry, tmp_path,
                                                      make_requests):
    requests = make_requests(3, "sd")
    t0 = datetime.datetime(2026, 11, 27, 12, 0, tzinfo=datetime.UTC).timestamp()

    def arrive(r, origin, at):
        return TimestampedValue((origin, json.dumps(r)), at)

    stream = (TestStream()
              .add_elements([arrive(r, f"m:{i}", t0 + i) for i, r in enumerate(requests)])
              .advance_watermark_to(t0 + 30)
              # Redelivered within the 60 s horizon: a duplicate.
              .add_elements([arrive(requests[0], "m:redelivered", t0 + 31)])
              .advance_watermark_to(t0 + 200)
              # Beyond the horizon the id is forgotten: answered again.
              .add_elements([arrive(requests[1], "m:much-later", t0 + 201)])
              .advance_watermark_to_infinity())
    options = PipelineOptions(_args(credit_registry, tmp_path, "--streaming", "--window_secs",
                                    "10", "--dedup_horizon_secs", "60", "--run_id", "dd",
                                    "--model_version", "v0001"))
    with TestPipeline(options=options) as p:
        config = credit_scoring.prepare(options)
        outputs = credit_scoring.build(p, config, requests=p | stream)
        assert_that(outputs["responses"] | beam.FlatMap(rows_of) | beam.Map(
            lambda r: r["request_id"]), equal_to(
            [r["request_id"] for r in requests] + [requests[1]["request_id"]]),
            label="Answered")
        assert_that(outputs["dead_letters"] | beam.Map(lambda d: (d["origin"], d["stage"])),
                    equal_to([("m:redelivered", "duplicate")]), label="Redelivery")


def test_a_retried_offer_call_gets_the_first_quote_back(offer_service):
    server = offer_service()
    rows = [{"prediction_id": f"idem-{i}", "bank": "alpenbank", "score": 0.95,
             "credit_amount": 1000.0} for i in range(3)]
    caller = OfferCaller(server.url, {"amount": "credit_amount"})
    before = server.stats()
    first = caller.call(rows, 5.0)
    again = caller.call(rows, 5.0)
    after = server.stats()
    assert [r["offer_id"] for r in first] == [r["offer_id"] for r in again]
    assert after.get("quotes_created", 0) - before.get("quotes_created", 0) == 3
    assert after.get("replayed", 0) - before.get("replayed", 0) == 3
