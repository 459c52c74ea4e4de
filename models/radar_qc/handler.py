"""RunInference plumbing for the radar QC UNet: one element per volume, per-gate classes out.

An element is ``(key, moments)`` with the volume's dual-pol sweeps stacked as float32
``(sweeps, azimuth, range, 4)``; the key (whatever the pipeline needs to write the volume)
passes through untouched. A volume is one RunInference call, split into model calls of at most
``sweeps_per_call`` sweeps so that a worker's memory stays bounded; the inference is the uint8
class per gate (``NO_ECHO`` where there is no echo), not the float probabilities: 4x smaller,
and what every consumer downstream needs.
"""

from collections.abc import Callable, Sequence

import numpy as np
from apache_beam.ml.inference.base import KeyedModelHandler, PredictionResult
from apache_beam.ml.inference.onnx_inference import OnnxModelHandlerNumpy

from models.radar_qc.engine import ONNX, onnx_model, worker_threads
from models.radar_qc.vocabulary import classify

# One sweep per engine call: measured on KLBB (9 sweeps, 2 cores), ONNX Runtime took the
# same time per volume with 1 or 4 sweeps per call (4.0 s vs 4.3 s) but its working memory
# grew from ~0.45 GB to ~1.9 GB with 4 (UNet feature maps of 1.3 M gates each).
DEFAULT_SWEEPS_PER_CALL = 1


# Rays from the other side of north added at each azimuth edge before the UNet runs, so the
# 0/360 degree seam is seen as the continuous ring it is (no artefact along north). A multiple
# of 16 keeps the UNet's pooling grid; 64 rays (32 degrees) cover most of its receptive field.
SEAM_RAYS = 64


def wrap_azimuth(moments: np.ndarray, rays: int = SEAM_RAYS) -> np.ndarray:
    """``(sweeps, azimuth, range, C)`` padded circularly along azimuth by ``rays`` each side."""
    return np.concatenate([moments[:, -rays:], moments, moments[:, :rays]], axis=1)


def classify_sweeps(probabilities: Callable[[np.ndarray], np.ndarray], moments: np.ndarray,
                    sweeps_per_call: int = DEFAULT_SWEEPS_PER_CALL,
                    seam_rays: int = SEAM_RAYS) -> np.ndarray:
    """Classes ``(sweeps, azimuth, range)`` of a stack of sweeps, a few sweeps per model call,
    each sweep padded circularly along azimuth (``seam_rays``, 0 = none) and cropped back.

    Args:
        probabilities: the engine: float32 moments -> class probabilities.
        moments: ``(sweeps, azimuth, range, 4)``.
        sweeps_per_call: most sweeps per engine call.
        seam_rays: rays added across north at each edge.
    """
    out = np.empty(moments.shape[:-1], dtype=np.uint8)
    for start in range(0, len(moments), sweeps_per_call):
        part = moments[start:start + sweeps_per_call]
        if seam_rays:
            scores = np.asarray(probabilities(wrap_azimuth(part, seam_rays)))
            scores = scores[:, seam_rays:-seam_rays]
        else:
            scores = np.asarray(probabilities(part))
        out[start:start + sweeps_per_call] = classify(scores, part)
    return out


def keras_probabilities(model) -> Callable[[np.ndarray], np.ndarray]:
    return lambda moments: model(moments, training=False)


def onnx_probabilities(session) -> Callable[[np.ndarray], np.ndarray]:
    name = session.get_inputs()[0].name
    return lambda moments: session.run(None, {name: np.ascontiguousarray(moments)})[0]


class _VolumeInference:
    """TF handler's inference function: each element (a volume's stack) classified alone."""

    def __init__(self, sweeps_per_call: int):
        self._sweeps_per_call = sweeps_per_call

    def __call__(self, model, batch: Sequence[np.ndarray], inference_args=None,
                 model_id: str | None = None) -> list[PredictionResult]:
        engine = keras_probabilities(model)
        return [PredictionResult(m, classify_sweeps(engine, m, self._sweeps_per_call), model_id)
                for m in batch]


class OnnxVolumeHandler(OnnxModelHandlerNumpy):
    """Beam's ONNX Runtime handler, classifying each volume in bounded engine calls and
    reporting the registry's ``.keras`` path as the model id (it names the version)."""

    def __init__(self, onnx_path: str, model_path: str, sweeps_per_call: int,
                 max_batch_duration_secs: int | None = None):
        super().__init__(onnx_path, providers=["CPUExecutionProvider"], min_batch_size=1,
                         max_batch_size=1, max_batch_duration_secs=max_batch_duration_secs)
        self._model_path = model_path
        self._sweeps_per_call = sweeps_per_call

    def load_model(self):
        import onnxruntime as ort

        # Built here, not in __init__: SessionOptions cannot be pickled with the handler.
        options = ort.SessionOptions()
        options.intra_op_num_threads = worker_threads()
        options.inter_op_num_threads = 1
        self._session_options = options
        return super().load_model()

    def run_inference(self, batch, inference_session, inference_args=None):
        engine = onnx_probabilities(inference_session)
        return [PredictionResult(m, classify_sweeps(engine, m, self._sweeps_per_call),
                                 self._model_path) for m in batch]


def radar_model_handler(model_path: str, manifest: dict, engine: str = ONNX,
                        sweeps_per_call: int = DEFAULT_SWEEPS_PER_CALL,
                        max_batch_duration_secs: int | None = None) -> KeyedModelHandler:
    """A keyed handler for (key, stacked sweeps of one volume) elements.

    Args:
        model_path: the version's ``.keras`` file (its path names the version, and is
            reported as ``PredictionResult.model_id`` by either engine).
        manifest: the version's manifest (the ONNX export and its sha256).
        engine: ``onnx`` (ONNX Runtime, CPU) or ``tensorflow``.
        sweeps_per_call: most sweeps per engine call; bounds memory.
        max_batch_duration_secs: in streaming, the longest a volume waits for its call.

    Raises:
        EngineError: ONNX asked for, and the version has no valid export.
    """
    if engine == ONNX:
        return KeyedModelHandler(OnnxVolumeHandler(
            onnx_model(model_path, manifest), model_path, sweeps_per_call,
            max_batch_duration_secs))
    from apache_beam.ml.inference.tensorflow_inference import TFModelHandlerNumpy

    import models.radar_qc.model  # noqa: F401 - registers the preprocessing layer

    return KeyedModelHandler(TFModelHandlerNumpy(
        model_path, inference_fn=_VolumeInference(sweeps_per_call), min_batch_size=1,
        max_batch_size=1, max_batch_duration_secs=max_batch_duration_secs))
