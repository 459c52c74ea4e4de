"""Scoring the shadow version beside the champion, through RunInference: its score and the
decision the rules would take on it fill the sampled rows' shadow columns; a batch the shadow
fails on passes on unchanged (shadow columns null), counted and logged."""

import logging

import apache_beam as beam
from apache_beam.ml.inference.base import RunInference

from transforms.common.inference import failure_reason
from transforms.credit import rows as credit_rows

LOGGER = logging.getLogger(__name__)
SHADOW_FAILED = "shadow_rows_unscored"


class ShadowScores(beam.PTransform):
    """Scored record batches -> the same batches with the shadow columns filled.

    Args:
        handler: the shadow version's model handler (``credit_batch_handler``).
        shadow: (version, sha256) of the shadow version.
        rules: the offer rules in force (the shadow's decision is theirs on its score).
    """

    def __init__(self, handler, shadow: tuple[str, str], rules):
        super().__init__()
        self._handler = handler
        self._shadow = shadow
        self._rules = rules

    def expand(self, batches):
        scored, failures = (batches | "ScoreShadow" >> RunInference(
            self._handler).with_exception_handling())
        filled = scored | "ShadowColumns" >> beam.Map(
            lambda result, shadow, rules: credit_rows.with_shadow(
                result.example, result.inference, shadow, rules), self._shadow, self._rules)
        unscored = failures.failed_inferences | "ShadowFailed" >> beam.FlatMap(unscored_batches)
        return (filled, unscored) | "ShadowOutcomes" >> beam.Flatten()


def unscored_batches(failed):
    """The batches of a shadow call that failed, unchanged (their shadow columns stay null)."""
    batches, error = failed
    error_class, message = failure_reason(error)
    rows = sum(b.num_rows for b in batches)
    beam.metrics.Metrics.counter("credit_scoring", SHADOW_FAILED).inc(rows)
    LOGGER.warning("the shadow could not score %d rows (%s: %s); their shadow columns stay "
                   "empty, the champion's answers are unchanged", rows, error_class, message)
    yield from batches
