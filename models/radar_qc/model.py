"""The radar QC model: a small Keras UNet that classifies every gate of a sweep.

Input: raw moments as float32 ``(batch, azimuth, range, channels)``, NaN where there is no
measurement: the dual-polarization model takes ``CHANNELS`` (DBZH dBZ, ZDR dB, RHOHV, PHIDP
degrees), the single-polarization model ``SINGLE_POL_CHANNELS`` (DBZH, VRADH and WRADH in m/s,
the last two NaN where the sweep has no Doppler measurement); azimuth and range sizes must be
multiples of ``2 ** depth`` (720 x 1840 is). Output: per-gate class probabilities
``(batch, azimuth, range, 3)`` for meteorological, biological, clutter/noise.

Preprocessing lives inside the model (``SweepPreprocessing``), so serving feeds sweeps exactly
as the reader produces them. It is a registered Keras layer: import this module before loading
a saved model (the handler does).
"""

import keras
import numpy as np
from keras import ops

from models.radar_qc.vocabulary import (
    CHANNELS,
    CLASS_NAMES,
    NON_MET,
    OPTIONAL_CHANNELS,
    classify,
)

N_CLASSES = len(CLASS_NAMES)
# (centre, scale) of each moment fed as a number: features are (value - centre) / scale.
SCALING = {"DBZH": (10.0, 20.0), "ZDR": (0.0, 4.0), "RHOHV": (0.8, 0.2),
           "VRADH": (0.0, 15.0), "WRADH": (2.0, 3.0)}


@keras.saving.register_keras_serializable(package="beamline")
class SweepPreprocessing(keras.layers.Layer):
    """Raw moments -> scaled features plus an echo indicator.

    NaN (no echo) becomes 0 in every feature and 0 in the indicator. PHIDP enters as its sine
    and cosine: its absolute value depends on the radar's system phase, while its texture along
    the ray is what separates rain from everything else, and sine/cosine keep the 0/360 wrap
    continuous. An optional channel (velocity, spectrum width) is 0 where it is missing and
    comes with its own presence indicator, so "no Doppler scan here" differs from "0 m/s".

    Args:
        channels: the input's moment names in order (first: DBZH, which defines echo).
    """

    def __init__(self, channels=CHANNELS, **kwargs):
        super().__init__(**kwargs)
        self.channels = tuple(channels)

    def get_config(self):
        return {**super().get_config(), "channels": list(self.channels)}

    def call(self, moments):
        echo = ops.cast(ops.logical_not(ops.isnan(moments[..., 0:1])), moments.dtype)
        clean = ops.where(ops.isnan(moments), ops.zeros_like(moments), moments)
        features, indicators = [], []
        for index, name in enumerate(self.channels):
            value = clean[..., index:index + 1]
            if name == "PHIDP":
                phase = value * (np.pi / 180.0)
                features += [ops.sin(phase), ops.cos(phase)]
                continue
            centre, scale = SCALING[name]
            if name in OPTIONAL_CHANNELS:
                present = ops.cast(ops.logical_not(ops.isnan(moments[..., index:index + 1])),
                                   moments.dtype) * echo
                features.append((value - centre) / scale * present)
                indicators.append(present)
            else:
                features.append((value - centre) / scale)
        return ops.concatenate([f * echo for f in features] + indicators + [echo], axis=-1)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], feature_count(self.channels))


def feature_count(channels) -> int:
    """Features ``SweepPreprocessing`` makes of ``channels``."""
    return (len(channels) + ("PHIDP" in channels)
            + sum(c in OPTIONAL_CHANNELS for c in channels) + 1)


@keras.saving.register_keras_serializable(package="beamline")
def weak_label_loss(labels, probabilities):
    """Sparse categorical cross-entropy that also takes the weak label ``NON_MET`` ("not
    weather, class unknown") as -log(P(biological) + P(clutter/noise))."""
    labels = ops.cast(ops.reshape(labels, ops.shape(probabilities)[:-1]), "int32")
    p = ops.clip(probabilities, 1e-7, 1.0)
    known = ops.take_along_axis(p, ops.expand_dims(ops.minimum(labels, N_CLASSES - 1), -1),
                                axis=-1)[..., 0]
    not_weather = ops.clip(p[..., 1] + p[..., 2], 1e-7, 1.0)
    return -ops.log(ops.where(labels == NON_MET, not_weather, known))


def build_unet(base_filters: int = 8, depth: int = 4, learning_rate: float = 2e-3,
               channels=CHANNELS):
    """A compiled UNet (two 3x3 convolutions per level, max-pooling down, transposed
    convolutions up, skip connections), softmax over the QC classes, taking ``channels``."""
    moments = keras.Input(shape=(None, None, len(channels)), name="moments", dtype="float32")
    x = SweepPreprocessing(channels, name="preprocess")(moments)
    skips = []
    for level in range(depth):
        filters = base_filters * 2 ** level
        x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu",
                                name=f"down{level}_a")(x)
        x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu",
                                name=f"down{level}_b")(x)
        skips.append(x)
        x = keras.layers.MaxPooling2D(2, name=f"pool{level}")(x)
    x = keras.layers.Conv2D(base_filters * 2 ** depth, 3, padding="same", activation="relu",
                            name="bottom")(x)
    for level in reversed(range(depth)):
        filters = base_filters * 2 ** level
        x = keras.layers.Conv2DTranspose(filters, 2, strides=2, name=f"up{level}")(x)
        x = keras.layers.Concatenate(name=f"skip{level}")([x, skips[level]])
        x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu",
                                name=f"up{level}_a")(x)
        x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu",
                                name=f"up{level}_b")(x)
    probabilities = keras.layers.Conv2D(N_CLASSES, 1, activation="softmax",
                                        name="classes")(x)
    model = keras.Model(moments, probabilities, name="radar_qc_unet")
    # Equal to sparse categorical cross-entropy on the classes; also takes weak labels.
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=weak_label_loss)
    return model


def predict_classes(model, moments: np.ndarray, batch_size: int = 4) -> np.ndarray:
    """Classes of a stack of sweeps ``(n, azimuth, range, channels)``, in batches."""
    out = np.empty(moments.shape[:-1], dtype=np.uint8)
    for start in range(0, len(moments), batch_size):
        batch = moments[start:start + batch_size]
        out[start:start + batch_size] = classify(
            np.asarray(model(batch, training=False)), batch)
    return out
