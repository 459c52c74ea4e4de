"""Replaying sampled radar QC sweeps: the referenced volume decoded again and the sweep
classified by the exact model version; the bit-packed removal mask must be identical."""

import numpy as np

from models.radar_qc.vocabulary import class_counts, pack_mask
from transforms.radar.reading import open_volume
from transforms.radar.volumes import keyed_sweeps


class ReplayError(Exception):
    """A referenced volume or sweep cannot be read again."""


def load_radar_model(path: str, manifest: dict | None = None):
    """A radar QC version loaded on the engine its runs use by default (``--engine auto``):
    an ONNX Runtime session of its export when it has one (sha256 checked), else the Keras
    model. The two engines' float32 kernels round differently, so a gate whose two classes tie
    to the last bits can flip between them: a replay bit-exact to the run uses the same one."""
    from models.radar_qc.engine import ONNX, choose_engine, onnx_model

    if manifest is not None and choose_engine("auto", manifest) == ONNX:
        import onnxruntime as ort

        return ort.InferenceSession(onnx_model(path, manifest),
                                    providers=["CPUExecutionProvider"])
    import keras

    import models.radar_qc.model  # noqa: F401 - registers the preprocessing layer

    return keras.models.load_model(path, compile=False)


def replay_radar(rows: list[dict], model, manifest: dict | None = None,
                 rules_path: str | None = None, registry: str | None = None) -> list[dict]:
    """Re-decode each referenced volume and re-classify the sampled sweeps; masks must match.

    ``manifest``, ``rules_path`` and ``registry`` are unused: the signature every capability's
    replay shares.
    """
    import onnxruntime as ort

    from models.radar_qc.handler import (
        classify_sweeps,
        keras_probabilities,
        onnx_probabilities,
    )

    probabilities = (onnx_probabilities(model) if isinstance(model, ort.InferenceSession)
                     else keras_probabilities(model))

    out = []
    by_source: dict[str, list[dict]] = {}
    for row in rows:
        by_source.setdefault(row["source"], []).append(row)
    for source, sweeps in by_source.items():
        paths = tuple(source.split(";"))
        tree = open_volume(paths[0] if len(paths) == 1 else list(paths))
        # A sweep a single-pol model classified is replayed with the model given, which
        # must be that one (its channels).
        data = {key.sweep_number: moments
                for key, moments in keyed_sweeps(tree, paths, single_pol=True)}
        for row in sweeps:
            moments = data.get(row["sweep_number"])
            if moments is None:
                raise ReplayError(f"{source} has no sweep {row['sweep_number']}")
            classes = classify_sweeps(probabilities, moments[None])[0]
            packed = pack_mask(classes)
            differing = int(np.sum(np.unpackbits(np.frombuffer(packed, np.uint8))
                                   != np.unpackbits(np.frombuffer(row["mask_packed"], np.uint8))))
            out.append({
                "prediction_id": row["prediction_id"], "match": packed == row["mask_packed"],
                "stored": {"fraction_removed": row["fraction_removed"]},
                "replayed": {"fraction_removed": class_counts(classes)["fraction_removed"]},
                "differing_gates": differing, "source": source,
            })
    return out
