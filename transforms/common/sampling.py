"""Deterministic sampling of predictions: the same ids are kept in batch, streaming and backfill.

A prediction is kept iff ``fraction(prediction_id) < rate``, where the fraction is the first
8 bytes of the id's sha256 read as a number in [0, 1). Python's ``hash()`` is salted per
process, so it would sample differently on every worker; sha256 does not.
"""

import hashlib

import apache_beam as beam


def sample_fraction(prediction_id: str) -> float:
    """Stable pseudo-random number in [0, 1) derived from the prediction id alone."""
    digest = hashlib.sha256(prediction_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / float(1 << 64)


def keep_prediction(prediction_id: str, rate: float) -> bool:
    """True iff this prediction belongs to the sample at ``rate`` (0 keeps none, 1 keeps all)."""
    return sample_fraction(prediction_id) < rate


def validate_rate(rate: float) -> float:
    """The rate itself if it lies in [0, 1].

    Raises:
        ValueError: the rate is outside [0, 1].
    """
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"sample rate must lie in [0, 1], got {rate}")
    return rate


class SamplePredictions(beam.PTransform):
    """Keeps the rows whose ``id_field`` falls in the deterministic sample."""

    def __init__(self, rate: float, id_field: str = "prediction_id"):
        super().__init__()
        self._rate = validate_rate(rate)
        self._id_field = id_field

    def expand(self, rows):
        rate, id_field = self._rate, self._id_field
        return rows | "KeepIfInSample" >> beam.Filter(
            lambda row: keep_prediction(row[id_field], rate))
