"""Dead letters: one record per input that did not make it to the primary output.

Every record carries the raw input (or, for large binaries, a reference to it), the stage that
rejected it, the error class, a message a person can act on, the time and the run id. They are
written with the same partitioned layout as predictions: ``<out>/dead_letters/pipeline=<p>/
model_name=<m>/dt=<failure date>/`` (the model whose run rejected the input, so the dead letters
of different data sets never share a folder).
"""

import datetime
import hashlib

import apache_beam as beam
import pyarrow as pa

from transforms.common.parquet_sink import WritePartitionedParquet, utc_date

DEAD_LETTERS = "dead_letters"
# Raw text longer than this is cut (the full size is kept in raw_bytes and the origin names the
# source), so one giant bad line cannot bloat the dead-letter files.
MAX_RAW_CHARS = 16 * 1024

SCHEMA = pa.schema([
    ("dead_letter_id", pa.string()),
    ("pipeline", pa.string()),
    ("model_name", pa.string()),
    ("stage", pa.string()),
    ("error_class", pa.string()),
    ("message", pa.string()),
    ("raw", pa.string()),
    ("raw_bytes", pa.int64()),
    ("raw_truncated", pa.bool_()),
    # Keyed hash of a raw input kept only as a hash (personal data that cannot be redacted).
    ("raw_hmac", pa.string()),
    ("origin", pa.string()),
    ("failed_at", pa.timestamp("us", tz="UTC")),
    ("run_id", pa.string()),
    ("dt", pa.string()),
])
PARTITION_COLUMNS = ("pipeline", "model_name", "dt")
# Metrics namespace of dead letters counted per stage.
BY_STAGE = "dead_letters_by_stage"


def dead_letter(*, pipeline: str, stage: str, error: BaseException | str, raw: str | None,
                origin: str | None, run_id: str, error_class: str | None = None,
                failed_at: datetime.datetime | None = None, raw_bytes: int | None = None,
                raw_hmac: str | None = None) -> dict:
    """Build one dead-letter record.

    Args:
        pipeline: the pipeline's name.
        stage: where it failed: parse, validate, inference, offer, decode, ...
        error: the exception (its class and message are kept) or a message.
        raw: the raw input as text; None when only a reference is kept (large binaries).
        origin: where the input came from (file path and line, topic, ...).
        run_id: the run that rejected it.
        error_class: overrides the class name taken from ``error``.
        failed_at: defaults to now (UTC).
        raw_bytes: the original input's size when ``raw`` is not it (redacted, a reference).
        raw_hmac: keyed hash of an input kept only as a hash.
    """
    failed_at = failed_at or datetime.datetime.now(datetime.UTC)
    if isinstance(error, BaseException):
        error_class = error_class or type(error).__name__
        message = str(error) or repr(error)
    else:
        error_class = error_class or "Rejected"
        message = str(error)
    if raw_bytes is None and raw is not None:
        raw_bytes = len(raw.encode("utf-8", errors="replace"))
    truncated = raw is not None and len(raw) > MAX_RAW_CHARS
    raw_digest = raw_hmac[:16] if raw_hmac else hashlib.sha256(
        (raw or "").encode("utf-8", errors="replace")).hexdigest()[:16]
    return {
        "dead_letter_id": f"{run_id}:{stage}:{origin or ''}:{raw_digest}",
        "pipeline": pipeline,
        "stage": stage,
        "error_class": error_class,
        "message": message,
        "raw": raw[:MAX_RAW_CHARS] if truncated else raw,
        "raw_bytes": raw_bytes,
        "raw_truncated": truncated,
        "raw_hmac": raw_hmac,
        "origin": origin,
        "failed_at": failed_at,
        "run_id": run_id,
        "dt": utc_date(failed_at),
    }


class WriteDeadLetters(beam.PTransform):
    """Writes dead-letter records under ``<output>/dead_letters``; outputs the file paths.

    Args:
        output: the run's output root.
        run_id: prefix of file names.
        model_name: the model of the run, stamped on every record (a partition level).
        window_secs: 0 in batch, the file window in streaming.
    """

    def __init__(self, output: str, run_id: str, model_name: str, window_secs: int = 0):
        super().__init__()
        self._model_name = model_name
        self._sink = WritePartitionedParquet(
            base=f"{output.rstrip('/')}/{DEAD_LETTERS}", schema=SCHEMA,
            partition_columns=PARTITION_COLUMNS, file_prefix=run_id,
            window_secs=window_secs)

    def expand(self, records):
        return (records
                | "StampModelName" >> beam.ParDo(_StampFn(self._model_name))
                | "WriteDeadLetterFiles" >> self._sink)


class _StampFn(beam.DoFn):
    """Names the run's model on a dead letter and counts it by stage (the closing summary)."""

    def __init__(self, model_name: str):
        self._model_name = model_name

    def process(self, record):
        beam.metrics.Metrics.counter(BY_STAGE, record["stage"]).inc()
        yield dict(record, model_name=self._model_name)
