"""Train the radar QC UNet on synthetic sweeps with known truth and publish it to the registry.

Usage::

    python -m models.radar_qc.train --registry registry                   # dual-pol: radar_qc
    python -m models.radar_qc.train --registry registry --polarization single  # radar_qc_single

Training windows (128 rays x 256 gates) and the hold-out set (larger windows, other seed) come
from ``models.radar_qc.synthetic``. The baseline is the polarimetric rule "RHOHV below a
threshold is not weather" with the threshold tuned for CSI on the training windows. The manifest
records POD, FAR and CSI of the non-meteorological class (biological + clutter/noise) for both,
on echo gates of the hold-out set, and per-channel training statistics for drift checks.

The single-polarization model (legacy NEXRAD and single-pol radars: reflectivity, and velocity
and spectrum width where present) trains the same way on the same windows with those moments;
its hold-out set is the dual-pol model's windows and truth, so the two skills compare directly.
It has no RHOHV rule to beat.

Real sweeps join the training with weak labels through ``python -m transforms.radar.weak_labels``
(it reads volumes, which this layer does not), which calls ``train`` with them.
"""

import argparse
import datetime
import logging
import shlex
import sys
import tempfile

import numpy as np

from models import registry as model_registry
from models.exit_codes import run_command
from models.metrics import detection_scores
from models.promotion import promote_first, radar_smoke
from models.provenance import code_version, library_versions
from models.radar_qc.engine import ONNX_EXPORT, export_onnx
from models.radar_qc.synthetic import synthetic_set
from models.radar_qc.vocabulary import (
    BIO,
    CHANNELS,
    CLASS_NAMES,
    CLUTTER,
    MET,
    NO_ECHO,
    SINGLE_POL_CHANNELS,
)
from models.statistics import numeric_stats

LOGGER = logging.getLogger(__name__)
# A seeded synthetic window (rays, gates) promotion classifies again; a multiple of 2**depth.
SMOKE_WINDOW = (32, 64)
MODEL_NAME = "radar_qc"
# Registered model name and input channels of each polarization.
POLARIZATIONS = {"dual": (MODEL_NAME, CHANNELS),
                 "single": ("radar_qc_single", SINGLE_POL_CHANNELS)}
RHOHV = CHANNELS.index("RHOHV")
TRAIN_WINDOW = (128, 256)
HOLDOUT_WINDOW = (256, 512)


def non_meteorological(labels: np.ndarray) -> np.ndarray:
    """True where the truth (or a prediction) is biological or clutter/noise."""
    return (labels == BIO) | (labels == CLUTTER)


def rhohv_rule(data: np.ndarray, threshold: float) -> np.ndarray:
    """The baseline: an echo gate with RHOHV below ``threshold`` is not weather."""
    rhohv = data[..., RHOHV]
    return ~np.isnan(rhohv) & (rhohv < threshold)


def tune_rhohv_threshold(data: np.ndarray, labels: np.ndarray,
                         candidates=np.arange(0.50, 0.995, 0.005)) -> float:
    """The RHOHV threshold with the best CSI of the non-meteorological class on echo gates."""
    echo = labels != NO_ECHO
    truth = non_meteorological(labels[echo])
    rhohv = data[..., RHOHV][echo]
    scores = [detection_scores(truth, rhohv < t)["csi"] for t in candidates]
    return float(candidates[int(np.nanargmax(scores))])


def skill(labels: np.ndarray, detected: np.ndarray) -> dict:
    """POD/FAR/CSI of the non-meteorological class over echo gates."""
    echo = labels != NO_ECHO
    scores = detection_scores(non_meteorological(labels[echo]), detected[echo])
    scores["echo_gates"] = int(echo.sum())
    return scores


def channel_statistics(data: np.ndarray, sample: int = 200_000, seed: int = 0,
                       channels=CHANNELS) -> dict:
    """Training statistics of each input moment over echo gates (for drift checks)."""
    rng = np.random.default_rng(seed)
    stats = {}
    for index, name in enumerate(channels):
        values = data[..., index][~np.isnan(data[..., index])]
        if len(values) > sample:
            values = rng.choice(values, sample, replace=False)
        stats[name] = numeric_stats(values)
    return stats


def train(registry: str, seed: int = 42, train_windows: int = 1200, holdout_windows: int = 48,
          epochs: int = 6, base_filters: int = 8, depth: int = 4, command: str | None = None,
          polarization: str = "dual", weak: dict | None = None,
          weak_weather_weight: float = 1.0, randomise: bool = False):
    """Generate data, train, score UNet and rule on the hold-out, publish; returns the ModelRef.

    Args:
        polarization: ``dual`` (model ``radar_qc``) or ``single`` (``radar_qc_single``).
        weak: windows of real sweeps with weak labels joining the training, as
            ``transforms.radar.weak_labels`` makes them: {"data", "labels", "volume_ids"}
            (dual-pol only).
        weak_weather_weight: loss weight of a weak "weather" gate (removing weather costs a
            forecaster more than keeping some clutter).
        randomise: domain-randomise the synthetic training windows (clear air, second trip,
            anomalous propagation, sensitivity, calibration, noise-corrected RHOHV); the
            hold-out windows stay plain, so the hold-out table compares with earlier versions.
    """
    import keras
    import tensorflow as tf

    from models.radar_qc.model import build_unet, predict_classes

    model_name, channels = POLARIZATIONS[polarization]
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()
    train_data, train_labels = synthetic_set(seed, train_windows, *TRAIN_WINDOW,
                                             channels=channels, randomise=randomise)
    holdout_data, holdout_labels = synthetic_set(seed + 1_000_003, holdout_windows,
                                                 *HOLDOUT_WINDOW, channels=channels)
    weak = weak or {}
    if weak and polarization != "dual":
        raise ValueError("weak labels come from dual-pol references; train the dual-pol model")
    if weak:
        train_data = np.concatenate([train_data, weak["data"]])
        train_labels = np.concatenate([train_labels, weak["labels"]])

    weights = (train_labels != NO_ECHO).astype(np.float32)
    if weak:
        real = np.zeros(len(train_labels), dtype=bool)
        real[-len(weak["labels"]):] = True
        weights[real[:, None, None] & (train_labels == MET)] *= weak_weather_weight
    targets = np.where(train_labels == NO_ECHO, 0, train_labels).astype(np.int32)
    model = build_unet(base_filters, depth, channels=channels)
    model.fit(train_data, targets, sample_weight=weights, epochs=epochs, batch_size=16,
              shuffle=True, verbose=2)

    predicted = predict_classes(model, holdout_data)
    metrics = {
        "set": f"{holdout_windows} synthetic windows of {HOLDOUT_WINDOW[0]} rays x "
               f"{HOLDOUT_WINDOW[1]} gates, seed {seed + 1_000_003}",
        "detected_class": "non-meteorological (biological + clutter/noise)",
        "unet": skill(holdout_labels, non_meteorological(predicted)),
    }
    if "RHOHV" in channels:
        threshold = tune_rhohv_threshold(train_data, train_labels)
        LOGGER.info("RHOHV rule threshold tuned on training windows: %.3f", threshold)
        metrics["rhohv_rule"] = {"threshold": threshold, **skill(
            holdout_labels, rhohv_rule(holdout_data, threshold))}
    LOGGER.info("hold-out: %s", metrics)
    echo = (train_labels != NO_ECHO) & (train_labels < len(CLASS_NAMES))
    manifest = {
        "created_at": datetime.datetime.now(datetime.UTC).isoformat(),
        "training_data": (f"synthetic: models.radar_qc.synthetic.synthetic_set(seed={seed}, "
                          f"count={train_windows}, n_azimuth={TRAIN_WINDOW[0]}, "
                          f"n_range={TRAIN_WINDOW[1]}, channels={list(channels)}, "
                          f"randomise={randomise})"),
        "code_version": code_version(),
        "library_versions": library_versions(),
        "training_command": command or shlex.join(["python", "-m", "models.radar_qc.train",
                                                 *sys.argv[1:]]),
        "seed": seed,
        "epochs": epochs,
        "architecture": {"kind": "unet", "base_filters": base_filters, "depth": depth,
                         "size_multiple": 2 ** depth},
        "classes": list(CLASS_NAMES),
        "polarization": polarization,
        "input_schema": {"moments": {"channels": list(channels), "dtype": "float32",
                                     "layout": "(azimuth, range, channel), NaN = no echo"}},
        "holdout_metrics": metrics,
        "weak_label_volumes": weak.get("volume_ids", []),
        "weak_label_windows": int(len(weak.get("labels", []))),
        "weak_weather_weight": weak_weather_weight if weak else None,
        "feature_statistics": channel_statistics(train_data, channels=channels),
        "class_fractions": {name: float(np.mean(train_labels[echo] == index))
                            for index, name in enumerate(CLASS_NAMES)},
        "model_kind": "radar_qc",
        # Promotion classifies this window again and must get the same classes.
        "smoke": {"seed": seed + 7, "shape": list(SMOKE_WINDOW),
                  "classes_sha256": radar_smoke(model, seed + 7, SMOKE_WINDOW, channels)},
    }
    with tempfile.TemporaryDirectory() as tmp:
        path = f"{tmp}/model.keras"
        model.save(path)
        # The CPU engine's form of the same network (models.radar_qc.engine).
        export_onnx(model, f"{tmp}/{ONNX_EXPORT}")
        ref = model_registry.publish(registry, model_name, path, manifest,
                                     exports={ONNX_EXPORT: f"{tmp}/{ONNX_EXPORT}"})
    promote_first(registry, ref)
    return ref


def add_training_arguments(parser) -> None:
    """The training options (shared with ``transforms.radar.weak_labels``' CLI)."""
    parser.add_argument("--registry", default="registry", help="registry root folder")
    parser.add_argument("--seed", type=int, default=42, help="seed of data, init and shuffling")
    parser.add_argument("--train_windows", type=int, default=1200,
                        help="synthetic training windows")
    parser.add_argument("--holdout_windows", type=int, default=48,
                        help="synthetic hold-out windows")
    parser.add_argument("--domain_randomise", action="store_true",
                        help="domain-randomise the synthetic training windows (clear-air "
                             "return, second-trip echo, anomalous propagation, sensitivity, "
                             "ZDR calibration, noise-corrected RHOHV); hold-out stays plain")
    parser.add_argument("--epochs", type=int, default=6, help="training epochs")
    parser.add_argument("--base_filters", type=int, default=8, help="filters of the top level")
    parser.add_argument("--depth", type=int, default=4, help="pooling levels")
    parser.add_argument("--polarization", choices=sorted(POLARIZATIONS), default="dual",
                        help="dual: DBZH, ZDR, RHOHV, PHIDP (model radar_qc); single: DBZH "
                             "and velocity/spectrum width where present (radar_qc_single), "
                             "for legacy and single-polarization volumes")


def print_published(ref) -> None:
    metrics = ref.manifest["holdout_metrics"]
    print(f"published {ref.name} {ref.version} -> {ref.path}")
    for name in ("unet", "rhohv_rule"):
        if name not in metrics:
            continue
        m = metrics[name]
        print(f"  {name:<10} POD {m['pod']:.3f}  FAR {m['far']:.3f}  CSI {m['csi']:.3f}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_training_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    print_published(train(args.registry, args.seed, args.train_windows, args.holdout_windows,
                          args.epochs, args.base_filters, args.depth,
                          polarization=args.polarization, randomise=args.domain_randomise))


if __name__ == "__main__":
    sys.exit(run_command(main))
