"""RunInference plumbing for the credit model: dict inputs through Beam's TF model handler."""

from collections.abc import Sequence

from apache_beam.ml.inference.base import KeyedModelHandler, PredictionResult
from apache_beam.ml.inference.tensorflow_inference import TFModelHandlerNumpy

# Importing the model module registers its layers, which loading the .keras file needs.
from models.credit.model import predict_scores


class CreditInference:
    """Scores a batch of raw applicant dicts in one model call.

    Beam's default numpy inference stacks arrays; the credit model takes a dict of named
    columns instead, typed by the data set, so the batch is turned into columns here.

    Args:
        kinds: ``{field: "numeric" | "categorical"}`` of the served version's data set.
    """

    def __init__(self, kinds: dict[str, str]):
        self._kinds = dict(kinds)

    def __call__(self, model, batch: Sequence[dict], inference_args=None,
                 model_id: str | None = None) -> list[PredictionResult]:
        scores = predict_scores(model, list(batch), self._kinds)
        return [PredictionResult(example, float(score), model_id)
                for example, score in zip(batch, scores)]


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
