"""Deterministic sampling of predictions: the same ids are kept in batch, streaming and backfill.

A prediction is kept iff ``fraction(prediction_id) < rate``, where the fraction is the first
8 bytes of the id's sha256 read as a number in [0, 1). Python's ``hash()`` is salted per
process, so it would sample differently on every worker; sha256 does not.
"""

import hashlib

import apache_beam as beam
import numpy as np
import pyarrow as pa


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


def sample_batch(batch: pa.RecordBatch, rate: float, id_field: str = "prediction_id"
                 ) -> pa.RecordBatch:
    """The rows of a record batch that belong to the sample (same rule as ``keep_prediction``)."""
    if rate >= 1.0:
        return batch
    keep = np.fromiter((keep_prediction(i, rate) for i in batch.column(id_field).to_pylist()),
                       dtype=bool, count=batch.num_rows)
    return batch.filter(pa.array(keep))


def _sample(element, rate: float, id_field: str):
    """A dict row if it is in the sample; a record batch's rows that are (if any)."""
    if isinstance(element, dict):
        if keep_prediction(element[id_field], rate):
            yield element
        return
    kept = sample_batch(element, rate, id_field)
    if kept.num_rows:
        yield kept


class SamplePredictions(beam.PTransform):
    """Keeps the rows (dicts, or rows of record batches) whose ``id_field`` falls in the
    deterministic sample."""

    def __init__(self, rate: float, id_field: str = "prediction_id"):
        super().__init__()
        self._rate = validate_rate(rate)
        self._id_field = id_field

    def expand(self, rows):
        rate, id_field = self._rate, self._id_field
        return rows | "KeepIfInSample" >> beam.FlatMap(_sample, rate, id_field)
