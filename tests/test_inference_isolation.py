"""A request the model fails on is the only one dead-lettered, not the batch it came in."""

import functools
import json

import apache_beam as beam
import keras
import numpy as np
import pyarrow as pa
import pytest
from apache_beam.ml.inference.tensorflow_inference import TFModelHandlerNumpy
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from models import registry as model_registry
from models.credit.handler import CreditInference
from models.credit.model import predict_scores
from tests.conftest import german_dataset
from transforms.common.inference import (
    RunInferenceIsolatingFailures,
    failure_reason,
    split_failed_batch,
)
from transforms.credit import rows as credit_rows
from transforms.credit.dofns import ParseRequestBatchFn

POISON = {"iso-0000007", "iso-0000031"}


class PoisonedInference(CreditInference):
    """The real credit model, failing every call that contains a poisoned request (a fault
    injected at the model call, as an engine bug or a bad row would raise there)."""

    def __call__(self, model, batch, inference_args=None, model_id=None):
        ids = {i for b in batch for i in b.column("request_id").to_pylist()}
        if ids & POISON:
            raise ValueError(f"cannot score {sorted(ids & POISON)}")
        return super().__call__(model, batch, inference_args, model_id)


def _batches(make_requests):
    dataset = german_dataset()
    parse = ParseRequestBatchFn("credit_scoring", "r1", 65536, dataset.fields)
    requests = make_requests(60, "iso")
    return [next(iter(parse.process([(f"m:{i}", json.dumps(r)) for i, r in
                                     enumerate(requests[start:start + 20], start)])))
            for start in range(0, 60, 20)], requests


def test_split_failed_batch_yields_every_request_alone(make_requests):
    batches, requests = _batches(make_requests)
    alone = list(split_failed_batch((batches[:2], ValueError("x")),
                                    functools.partial(credit_rows.chunks, size=1)))
    assert [b.num_rows for b in alone] == [1] * 40
    assert [b.column("request_id")[0].as_py() for b in alone] == \
        [r["request_id"] for r in requests[:40]]


@pytest.mark.slow
def test_only_the_failing_requests_are_reported(credit_registry, make_requests):
    model = model_registry.resolve(credit_registry, "credit_german", "v0001")
    kinds = german_dataset().kinds
    handler = TFModelHandlerNumpy(model.path, inference_fn=PoisonedInference(kinds),
                                  min_batch_size=1, max_batch_size=1)
    batches, requests = _batches(make_requests)
    # What the healthy model gives every request, to compare the retried scores with.
    healthy = predict_scores(keras.models.load_model(model.path),
                             pa.Table.from_batches(batches), kinds)
    expected = {r["request_id"]: float(s) for r, s in zip(requests, healthy)}
    with TestPipeline() as p:
        predictions, failed = (p | beam.Create(batches) | RunInferenceIsolatingFailures(
            handler, functools.partial(credit_rows.chunks, size=1)))
        scored = predictions | beam.FlatMap(
            lambda result: zip(result.example.column("request_id").to_pylist(),
                               np.asarray(result.inference).tolist()))
        assert_that(scored | beam.Map(lambda pair: pair[0]),
                    equal_to(sorted(set(expected) - POISON)), label="AllOthersScored")
        assert_that(scored | beam.Filter(lambda pair: abs(pair[1] - expected[pair[0]]) > 1e-6),
                    equal_to([]), label="SameScoresAsInOneBatch")
        assert_that(failed | beam.Map(lambda f: (
            f[0][0].column("request_id").to_pylist(), failure_reason(f[1]))),
            equal_to([(["iso-0000031"], ("ValueError", "cannot score ['iso-0000031']")),
                      (["iso-0000007"], ("ValueError", "cannot score ['iso-0000007']"))]),
            label="OnlyPoisonFailed")


def test_a_serving_function_that_is_down_fails_each_batch_once_not_each_request(make_requests):
    """A closed port: the real client is refused at once and the batch is reported whole
    (scored alone, each request would be refused again, after the client's throttling)."""
    from models.credit.handler import (
        EndpointUnavailable,
        RemoteCreditHandler,
        RemoteInferenceError,
        endpoint_unavailable,
    )
    from tests.conftest import free_port

    batches, _ = _batches(make_requests)
    handler = RemoteCreditHandler(f"http://127.0.0.1:{free_port()}", "credit_german", "v0001",
                                  num_retries=0, min_batch_size=1, max_batch_size=1,
                                  fields=german_dataset().field_names)
    with TestPipeline() as p:
        predictions, failed = (p | beam.Create(batches) | RunInferenceIsolatingFailures(
            handler, functools.partial(credit_rows.chunks, size=1),
            not_the_elements=endpoint_unavailable))
        assert_that(predictions, equal_to([]), label="NothingScored")
        assert_that(failed | beam.Map(lambda f: (
            sum(b.num_rows for b in f[0]), failure_reason(f[1])[0])),
            equal_to([(20, "EndpointUnavailable")] * 3), label="EachBatchOnce")
    # The judgement itself: Beam's (type, repr, traceback) and a raised exception alike.
    assert endpoint_unavailable((EndpointUnavailable, "x", []))
    assert endpoint_unavailable(EndpointUnavailable("x"))
    assert not endpoint_unavailable((RemoteInferenceError, "x", []))
    assert not endpoint_unavailable((ValueError, "x", []))
