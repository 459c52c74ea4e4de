"""The radar QC model's vocabulary: its input channels, its classes and the removal mask.

Everything that reads, writes, trains, evaluates or replays radar QC speaks these names, so they
live here, below all of them, rather than in any one of them.
"""

import numpy as np

# Model input channels, in order (moment names as xradar gives them): the dual-polarization
# model's, and the single-polarization model's for legacy and single-pol radars.
CHANNELS = ("DBZH", "ZDR", "RHOHV", "PHIDP")
SINGLE_POL_CHANNELS = ("DBZH", "VRADH", "WRADH")
# Channels a sweep may lack where it has reflectivity (velocity and spectrum width come from a
# separate Doppler scan, or not at all); models see them with a presence indicator.
OPTIONAL_CHANNELS = ("VRADH", "WRADH")
# Every moment the synthetic generator can give, in this order.
SYNTHETIC_MOMENTS = CHANNELS + OPTIONAL_CHANNELS
# Per-gate classes; NO_ECHO marks gates with no signal (never classified, never removed).
MET, BIO, CLUTTER = 0, 1, 2
CLASS_NAMES = ("meteorological", "biological", "clutter_noise")
NO_ECHO = 255
# A weak training label from real volumes: "not weather, class unknown" (trained as
# P(biological) + P(clutter/noise); see transforms.radar.weak_labels).
NON_MET = 3


def classify(probabilities: np.ndarray, moments: np.ndarray) -> np.ndarray:
    """Per-gate class (uint8) from the model's probabilities; NO_ECHO where DBZH is NaN."""
    classes = np.argmax(probabilities, axis=-1).astype(np.uint8)
    classes[np.isnan(moments[..., 0])] = NO_ECHO
    return classes


def removed(classes: np.ndarray) -> np.ndarray:
    """True where a gate is classified as not weather (biological or clutter/noise)."""
    return (classes == BIO) | (classes == CLUTTER)


def protect_weather(classes: np.ndarray, moments: np.ndarray, min_dbzh: float,
                    min_rhohv: float) -> np.ndarray:
    """A weather-safety rule: every gate classified as removed whose reflectivity is at least
    ``min_dbzh`` and whose RHOHV is at least ``min_rhohv`` goes back to meteorological
    (strong, coherent echo is taken as weather). ``moments`` in ``CHANNELS`` order."""
    with np.errstate(invalid="ignore"):
        safe = ((moments[..., CHANNELS.index("DBZH")] >= min_dbzh)
                & (moments[..., CHANNELS.index("RHOHV")] >= min_rhohv))
    out = classes.copy()
    out[safe & removed(classes)] = MET
    return out


def class_counts(classes: np.ndarray) -> dict:
    """Gate counts per class, and the share of echo gates removed."""
    counts = {name: int(np.sum(classes == index)) for index, name in enumerate(CLASS_NAMES)}
    echo = sum(counts.values())
    counts["echo"] = echo
    counts["fraction_removed"] = (
        float((counts[CLASS_NAMES[BIO]] + counts[CLASS_NAMES[CLUTTER]]) / echo) if echo
        else 0.0)
    return counts


def pack_mask(classes: np.ndarray) -> bytes:
    """The removal mask of a sweep's classes, bit-packed (numpy packbits, row-major)."""
    return np.packbits(removed(classes)).tobytes()


def unpack_mask(packed: bytes, shape) -> np.ndarray:
    """Inverse of ``pack_mask``: a boolean (azimuth, range) removal mask."""
    bits = np.unpackbits(np.frombuffer(packed, dtype=np.uint8), count=int(np.prod(shape)))
    return bits.reshape(shape).astype(bool)
