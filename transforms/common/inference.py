"""RunInference that loses only the element that fails, not the batch it was scored in.

Beam's ``RunInference(...).with_exception_handling()`` reports a failed model call as the whole
batch with the error: one request the model cannot score would dead-letter every request of its
batch. Here a failed batch is split into elements of one input each and scored again, alone;
what fails alone is what is reported. A failure that is not the elements' fault (a serving
function that is down) is reported for its whole batch at once: scoring each element alone
would only repeat the handler's retries and backoff once per element.
"""

from collections.abc import Callable, Iterable

import apache_beam as beam
from apache_beam.ml.inference.base import RunInference


class RunInferenceIsolatingFailures(beam.PTransform):
    """RunInference with exception handling, and a second pass over failed batches.

    Args:
        handler: the model handler; it must accept the elements ``split`` makes (for the
            credit pipeline, record batches of one request).
        split: one element of a failed batch -> the elements scored alone in the second pass.
        model_metadata_pcoll: RunInference's model-update side input (the first pass only).
        not_the_elements: RunInference error -> True when the failure is not the elements'
            (their batch is reported as it failed, without the second pass); None: every
            failed batch gets the second pass.

    Output: ``(predictions, failed)``: the PredictionResults of both passes, and
    ``(batch, error)`` pairs of RunInference for each element that failed on its own.
    The second pass holds its own copy of the model (loaded by each worker when it starts),
    the version the run resolved at start: a second model-update side input hangs Beam's
    DirectRunner in streaming. Each result's model id names the version that scored it, so a
    request retried after an alias moved records the version it really got.
    """

    def __init__(self, handler, split: Callable[[object], Iterable[object]],
                 model_metadata_pcoll=None, not_the_elements: Callable | None = None):
        super().__init__()
        self._handler = handler
        self._split = split
        self._updates = model_metadata_pcoll
        self._not_the_elements = not_the_elements or (lambda error: False)

    def expand(self, elements):
        first, failures = (elements | "Infer" >> RunInference(
            self._handler, model_metadata_pcoll=self._updates).with_exception_handling())
        judged = failures.failed_inferences | "WhoseFailure" >> beam.Partition(
            lambda failed, _: int(bool(self._not_the_elements(failed[1]))), 2)
        alone = judged[0] | "SplitFailedBatches" >> beam.FlatMap(
            split_failed_batch, self._split)
        second, failures_alone = (alone | "InferAlone" >> RunInference(
            self._handler).with_exception_handling())
        predictions = (first, second) | "BothPasses" >> beam.Flatten()
        failed = (failures_alone.failed_inferences, judged[1]) | "AllFailures" >> beam.Flatten()
        return predictions, failed


def split_failed_batch(failed, split: Callable[[object], Iterable[object]]):
    """The elements of a failed RunInference batch, each cut into inputs scored alone."""
    batch, _error = failed
    for element in batch:
        yield from split(element)


def failure_reason(error) -> tuple[str, str]:
    """(error class, message) of a RunInference failure. Beam reports it as (exception type,
    repr, formatted traceback lines); the message is the traceback's last line without the
    class name, as a person would read it."""
    if isinstance(error, BaseException):
        return type(error).__name__, str(error) or repr(error)
    kind, text, trace = error
    # The last line reads "[module.]Class: message"; without a message, the repr says more.
    last = (trace[-1] if trace else "").strip()
    return kind.__name__, last.split(": ", 1)[1] if ": " in last else text
