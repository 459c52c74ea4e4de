"""RunInference plumbing for the credit model through Beam's TF model handler.

Elements are Arrow record batches of requests (the batch pipeline's element type: one element
per few thousand requests, so Beam's per-element cost is paid per batch), or single applicant
dicts keyed by the caller (the replay and comparison tools).
"""

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
from apache_beam.ml.inference.base import (
    KeyedModelHandler,
    PredictionResult,
    RemoteModelHandler,
)
from apache_beam.ml.inference.tensorflow_inference import TFModelHandlerNumpy

# Importing the model module registers its layers, which loading the .keras file needs.
from models.credit.model import predict_scores
from models.registry import remote_model_id


class CreditInference:
    """Scores a batch of elements in one model call.

    Beam's default numpy inference stacks arrays; the credit model takes a dict of named
    columns instead, typed by the data set, so the batch is turned into columns here. An
    element that is a record batch gets the array of its rows' scores as its inference; an
    applicant dict gets its score.

    Args:
        kinds: ``{field: "numeric" | "categorical"}`` of the served version's data set.
    """

    def __init__(self, kinds: dict[str, str]):
        self._kinds = dict(kinds)

    def __call__(self, model, batch: Sequence[dict | pa.RecordBatch], inference_args=None,
                 model_id: str | None = None) -> list[PredictionResult]:
        if batch and isinstance(batch[0], pa.RecordBatch):
            scores = predict_scores(model, pa.Table.from_batches(batch), self._kinds)
            return [PredictionResult(b, part, model_id)
                    for b, part in zip(batch, _split(scores, batch))]
        scores = predict_scores(model, list(batch), self._kinds)
        return [PredictionResult(example, float(score), model_id)
                for example, score in zip(batch, scores)]


def _split(values: np.ndarray, batches: Sequence[pa.RecordBatch]) -> list[np.ndarray]:
    """Cut one array of per-row values back into the record batches' lengths."""
    ends = np.cumsum([b.num_rows for b in batches])[:-1]
    return np.split(values, ends)


def credit_model_handler(model_path: str, kinds: dict[str, str], min_batch_size: int = 64,
                         max_batch_size: int = 2048,
                         max_batch_duration_secs: int | None = None) -> KeyedModelHandler:
    """A keyed TF handler for (key, raw applicant dict) elements.

    Args:
        model_path: the ``.keras`` file in the registry (its path names the version, and Beam
            reports it as ``PredictionResult.model_id``).
        kinds: the served version's field kinds (``Dataset.kinds``).
        min_batch_size: smallest batch handed to the model.
        max_batch_size: largest batch handed to the model.
        max_batch_duration_secs: in streaming, the longest an element waits for its batch.
    """
    return KeyedModelHandler(TFModelHandlerNumpy(
        model_path, inference_fn=CreditInference(kinds), min_batch_size=min_batch_size,
        max_batch_size=max_batch_size, max_batch_duration_secs=max_batch_duration_secs))


def credit_batch_handler(model_path: str, kinds: dict[str, str]) -> TFModelHandlerNumpy:
    """A TF handler for record-batch elements, each already a model batch: RunInference hands
    them to the model one at a time (the pipeline batches requests once, before parsing)."""
    return TFModelHandlerNumpy(model_path, inference_fn=CreditInference(kinds),
                               min_batch_size=1, max_batch_size=1)


class RemoteInferenceError(Exception):
    """The serving function refused a batch (4xx): retrying would not help."""


class EndpointUnavailable(Exception):
    """The serving function is down, overloaded or failing (5xx, 429, no answer): retried."""


def _retryable(error: Exception) -> bool:
    return isinstance(error, EndpointUnavailable)


def endpoint_unavailable(error) -> bool:
    """Whether a RunInference failure (an exception, or Beam's (type, repr, traceback)) is the
    serving function being unavailable after its retries: not the requests' fault."""
    kind = type(error) if isinstance(error, BaseException) else error[0]
    return isinstance(kind, type) and issubclass(kind, EndpointUnavailable)


class RemoteCreditHandler(RemoteModelHandler):
    """Scores batches by calling the serving function (services.model_server, TF Serving's
    REST API) instead of loading the model: Beam's RemoteModelHandler gives retries with
    backoff on ``EndpointUnavailable`` and client-side throttling.

    Args:
        endpoint: base URL of the serving function.
        model_name: the model, e.g. "credit_german".
        version: a version ("v0002") or an alias ("production") the server resolves.
        token: bearer token, if the server wants one.
        timeout_secs: timeout of one call.
        num_retries: retries of a call that failed for a transient reason.
        min_batch_size, max_batch_size: elements per call (applicant dicts, or record
            batches of requests).
        max_instances: most rows sent in one call (a record batch is sent in parts).
        resolved: ``{"name", "version", "sha256"}`` the run resolved, recorded when the server
            does not say which version answered (TF Serving and Vertex AI do not).
        fields: the data set's field names: what a record-batch element sends per row.
    """

    def __init__(self, endpoint: str, model_name: str, version: str, token: str | None = None,
                 timeout_secs: float = 10.0, num_retries: int = 3, min_batch_size: int = 64,
                 max_batch_size: int = 512, resolved: dict | None = None,
                 fields: Sequence[str] = (), max_instances: int = 512):
        super().__init__(namespace="credit_remote", num_retries=num_retries,
                         throttle_delay_secs=1, retry_filter=_retryable)
        target = (f"/versions/{int(version[1:])}" if version[1:].isdigit()
                  and version.startswith("v") else f"/labels/{version}")
        self._url = f"{endpoint.rstrip('/')}/v1/models/{model_name}{target}:predict"
        self._token = token
        self._timeout_secs = timeout_secs
        self._batch = {"min_batch_size": min_batch_size, "max_batch_size": max_batch_size}
        self._resolved = resolved or {"name": model_name, "version": version, "sha256": ""}
        self._fields = list(fields)
        self._max_instances = max_instances

    def batch_elements_kwargs(self):
        return dict(self._batch)

    def create_client(self):
        import requests

        return requests.Session()

    def request(self, batch: Sequence[dict | pa.RecordBatch], session, inference_args=None
                ) -> list[PredictionResult]:
        if batch and isinstance(batch[0], pa.RecordBatch):
            rows = pa.Table.from_batches(batch).select(self._fields).to_pylist()
            scores, model_id = [], None
            for start in range(0, len(rows), self._max_instances):
                part, model_id = self._predict(rows[start:start + self._max_instances], session)
                scores.extend(part)
            values = np.asarray(scores, dtype=np.float32)
            return [PredictionResult(b, part, model_id)
                    for b, part in zip(batch, _split(values, batch))]
        scores, model_id = self._predict(list(batch), session)
        return [PredictionResult(example, float(score), model_id)
                for example, score in zip(batch, scores)]

    def _predict(self, instances: list[dict], session) -> tuple[list[float], str]:
        """One call of the serving function: (scores, model id of the version that answered)."""
        import requests

        headers = {"Authorization": f"Bearer {self._token}"} if self._token else {}
        try:
            answer = session.post(self._url, json={"instances": instances}, headers=headers,
                                  timeout=self._timeout_secs)
        except (requests.ConnectionError, requests.Timeout) as error:
            raise EndpointUnavailable(f"serving function unreachable at {self._url}: "
                                      f"{error}") from error
        if answer.status_code == 429 or answer.status_code >= 500:
            raise EndpointUnavailable(f"serving function answered {answer.status_code} at "
                                      f"{self._url}: {answer.text[:200]}")
        if answer.status_code != 200:
            raise RemoteInferenceError(f"serving function answered {answer.status_code}: "
                                       f"{answer.text[:300]}")
        body = answer.json()
        return body["predictions"], remote_model_id(body.get("model") or self._resolved)
