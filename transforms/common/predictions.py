"""The sampled-prediction dataset every pipeline writes (the contract of DESIGN.md).

Layout: ``<out>/predictions/pipeline=<p>/model_name=<m>/model_version=<v>/dt=<YYYY-MM-DD>/
*.parquet``, where dt is the event date (UTC) so that a backfill of old events lands in the same
partitions as the original run. Each pipeline adds its own columns (raw inputs, outputs) to the
common ones below; the model name is a level of its own because models trained on different
data sets have different input columns, so every folder holds one schema and reads as one
table.
"""

import apache_beam as beam
import pyarrow as pa

from transforms.common.parquet_sink import DEFAULT_MAX_ROWS_PER_FILE, WritePartitionedParquet
from transforms.common.sampling import SamplePredictions

PREDICTIONS = "predictions"
PARTITION_COLUMNS = ("pipeline", "model_name", "model_version", "dt")
TIMESTAMP = pa.timestamp("us", tz="UTC")

# Columns every sampled-prediction row has, whatever the pipeline.
COMMON_FIELDS = (
    pa.field("prediction_id", pa.string(), nullable=False),
    pa.field("event_time", TIMESTAMP),
    pa.field("processed_at", TIMESTAMP),
    pa.field("pipeline", pa.string()),
    pa.field("run_mode", pa.string()),
    pa.field("run_id", pa.string()),
    pa.field("model_name", pa.string()),
    pa.field("model_version", pa.string()),
    pa.field("model_sha256", pa.string()),
    pa.field("code_version", pa.string()),
    pa.field("latency_ms", pa.float64()),
    pa.field("dt", pa.string()),
)


def predictions_schema(*pipeline_fields: pa.Field) -> pa.Schema:
    """The common columns followed by a pipeline's own."""
    return pa.schema([*COMMON_FIELDS, *pipeline_fields])


class WriteSampledPredictions(beam.PTransform):
    """Keeps the deterministic sample and writes it as partitioned Parquet; outputs file paths.

    Args:
        output: the run's output root; files go under ``<output>/predictions``.
        schema: full row schema (``predictions_schema(...)``).
        sample_rate: share of predictions kept.
        run_id: prefix of file names.
        window_secs: 0 in batch, the file window in streaming.
        max_rows_per_file: rows after which a file is closed and the next one started.
    """

    def __init__(self, output: str, schema: pa.Schema, sample_rate: float, run_id: str,
                 window_secs: int = 0, max_rows_per_file: int = DEFAULT_MAX_ROWS_PER_FILE):
        super().__init__()
        self._sample = SamplePredictions(sample_rate)
        self._sink = WritePartitionedParquet(
            base=f"{output.rstrip('/')}/{PREDICTIONS}", schema=schema,
            partition_columns=PARTITION_COLUMNS, file_prefix=run_id,
            max_rows_per_file=max_rows_per_file, window_secs=window_secs)

    def expand(self, rows):
        return rows | "Sample" >> self._sample | "WritePredictionFiles" >> self._sink
