"""RunInference plumbing for the radar QC UNet: keyed sweeps in, per-gate classes out."""

from collections.abc import Sequence

import numpy as np
from apache_beam.ml.inference.base import KeyedModelHandler, PredictionResult
from apache_beam.ml.inference.tensorflow_inference import TFModelHandlerNumpy

from models.radar_qc.model import classify  # also registers SweepPreprocessing for loading

# Four sweeps are ~84 MB of input and ~64 MB of class probabilities: the batch cap bounds a
# worker's memory, and larger batches gain nothing on CPU (a sweep is already 1.3 M gates).
DEFAULT_MAX_BATCH_SIZE = 4


def radar_inference_fn(model, batch: Sequence[np.ndarray], inference_args=None,
                       model_id: str | None = None) -> list[PredictionResult]:
    """Classify every gate of a batch of same-shaped sweeps in one model call.

    The inference is the uint8 class per gate (``NO_ECHO`` where there is no echo), not the
    float probabilities: 4x smaller, and what every consumer downstream needs.
    """
    stacked = np.stack(batch)
    classes = classify(np.asarray(model(stacked, training=False)), stacked)
    return [PredictionResult(sweep, sweep_classes, model_id)
            for sweep, sweep_classes in zip(batch, classes)]


def radar_model_handler(model_path: str, max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
                        max_batch_duration_secs: int | None = None) -> KeyedModelHandler:
    """A keyed TF handler for (sweep key, float32 (azimuth, range, 4) moments) elements.

    Args:
        model_path: the ``.keras`` file in the registry (its path names the version).
        max_batch_size: most sweeps per model call; bounds memory.
        max_batch_duration_secs: in streaming, the longest a sweep waits for its batch.
    """
    return KeyedModelHandler(TFModelHandlerNumpy(
        model_path, inference_fn=radar_inference_fn, min_batch_size=1,
        max_batch_size=max_batch_size, max_batch_duration_secs=max_batch_duration_secs))
