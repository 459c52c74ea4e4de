"""The engines that run the radar QC UNet: ONNX Runtime on CPU, TensorFlow as the fallback.

Every published version carries, beside its ``.keras`` file, the same network exported to
ONNX (``exports.onnx`` in the manifest, with the file's sha256). On CPU ONNX Runtime runs the
convolutions about twice as fast as TensorFlow with the same classes; TensorFlow stays for GPUs
and for versions published before the export existed.

Threads: one inference session per worker process uses every core the process may run on
(``os.sched_getaffinity``), intra-op; inter-op parallelism is 1 because the UNet is one chain
of convolutions. Beam's RunInference shares the session between the DoFn threads of a process,
so a worker with N cores runs one session of N threads rather than N sessions of one.
"""

import hashlib
import os

ONNX, TENSORFLOW, AUTO = "onnx", "tensorflow", "auto"
ENGINES = (AUTO, ONNX, TENSORFLOW)
ONNX_EXPORT = "onnx"
ONNX_FILE = "model.onnx"
OPSET = 17


class EngineError(ValueError):
    """An engine that cannot run this version: no export, or a file that fails its hash."""


def export_onnx(model, folder: str) -> str:
    """Write ``model`` (a Keras UNet) as ``<folder>/model.onnx`` with tf2onnx; returns the path.

    Any batch, azimuth and range size is accepted (the sizes stay multiples of the UNet's
    pooling, as for the Keras model).
    """
    import tensorflow as tf
    import tf2onnx

    os.makedirs(folder, exist_ok=True)
    spec = (tf.TensorSpec((None, None, None, model.input_shape[-1]), tf.float32,
                          name="moments"),)

    @tf.function(input_signature=spec)
    def probabilities(moments):
        return model(moments, training=False)

    path = os.path.join(folder, ONNX_FILE)
    tf2onnx.convert.from_function(probabilities, input_signature=spec, opset=OPSET,
                                  output_path=path)
    return path


def worker_threads() -> int:
    """Cores this process may run on (what a worker's one session uses)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def onnx_model(model_path: str, manifest: dict) -> str:
    """The ONNX file of a version, after checking its sha256 against the manifest.

    Args:
        model_path: the version's ``.keras`` file (the export lies beside it).
        manifest: the version's manifest.

    Raises:
        EngineError: the version has no ONNX export, the file is missing, or its content does
            not match the manifest's sha256 (naming the version).
    """
    version = f"{manifest.get('name')} {manifest.get('version')}"
    export = (manifest.get("exports") or {}).get(ONNX_EXPORT)
    if not export or ONNX_FILE not in export.get("files", {}):
        raise EngineError(f"{version} has no ONNX export (published before it existed); "
                          f"use --engine tensorflow or publish it again")
    path = os.path.join(os.path.dirname(model_path), export["path"], ONNX_FILE)
    try:
        with open(path, "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()
    except OSError as error:
        raise EngineError(f"{version}: ONNX export unreadable at {path}: {error}") from None
    if digest != export["files"][ONNX_FILE]:
        raise EngineError(f"{version}: {path} does not match the sha256 in its manifest "
                          f"(corrupt or replaced file); refusing to load it")
    return path


def choose_engine(requested: str, manifest: dict) -> str:
    """The engine a run uses: ``auto`` is ONNX when the version has the export (CPU), else
    TensorFlow; an explicit choice is kept."""
    if requested not in ENGINES:
        raise EngineError(f"unknown engine {requested!r}; choose one of {', '.join(ENGINES)}")
    if requested != AUTO:
        return requested
    has_onnx = ONNX_EXPORT in (manifest.get("exports") or {})
    return ONNX if has_onnx else TENSORFLOW
