"""Writing rows as Hive-partitioned Parquet, in batch and streaming, with complete files only.

Layout: ``<base>/<col1>=<v1>/<col2>=<v2>/<prefix>-<window>-<pane>-<shard>.parquet``. Partition
columns live in the folder names only (as Hive, BigQuery external tables and pyarrow.dataset
expect), not inside the files.

How files stay complete and never duplicated:
- rows are grouped per (partition, shard) and window, so one file holds one group;
- each file is written under a hidden temporary name (pyarrow.dataset skips names starting with
  "." or "_") and renamed when complete;
- the name is a function of run, window, pane and shard only, so a retried bundle rewrites the
  same file instead of adding a second copy.
In streaming the rows are put into fixed windows first; late rows are not dropped: they come as
later panes (a new file each), because losing a row silently would break the conservation rule.
"""

import datetime
import logging
import uuid

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems
from apache_beam.transforms import trigger, window

from transforms.common.sampling import sample_fraction

LOGGER = logging.getLogger(__name__)
# Metrics namespace of the rows written per dataset.
ROWS_WRITTEN = "rows_written"
# Late rows are still written for this long after their window closed.
ALLOWED_LATENESS_SECS = 24 * 3600


def file_windows(window_secs: int) -> beam.WindowInto:
    """Fixed windows whose late rows come as extra panes instead of being dropped.

    Streaming pipelines apply this right at their source: transforms that batch by state
    (RunInference's BatchElements) emit at the end of their window, so a window assigned
    after them would put every row at the end of the global window.
    """
    return beam.WindowInto(
        window.FixedWindows(window_secs),
        trigger=trigger.AfterWatermark(late=trigger.AfterCount(1)),
        accumulation_mode=trigger.AccumulationMode.DISCARDING,
        allowed_lateness=ALLOWED_LATENESS_SECS)


def partition_path(base: str, columns: tuple[str, ...], values: tuple) -> str:
    """``<base>/col=value/...`` for one partition."""
    parts = [f"{c}={_partition_value(v)}" for c, v in zip(columns, values)]
    return FileSystems.join(base, *parts)


def _partition_value(value) -> str:
    text = "__HIVE_DEFAULT_PARTITION__" if value is None else str(value)
    # A partition value may not contain a path separator or an "=".
    return text.replace("/", "_").replace("=", "_")


def window_tag(win) -> str:
    """A file-name-safe name for a window: "all" for the global window, else its bounds."""
    if isinstance(win, window.GlobalWindow):
        return "all"

    def fmt(ts):
        try:
            return ts.to_utc_datetime().strftime("%Y%m%dT%H%M%SZ")
        except (OverflowError, ValueError):  # windows at the ends of time
            return f"{ts.micros}us"

    return f"{fmt(win.start)}-{fmt(win.end)}"


def file_name(prefix: str, win, pane_index: int, shard: int) -> str:
    return f"{prefix}-{window_tag(win)}-p{pane_index:03d}-{shard:05d}.parquet"


def rows_to_table(rows: list[dict], schema: pa.Schema) -> pa.Table:
    """Rows -> table with exactly the schema's columns (extra keys ignored, missing -> null)."""
    return pa.Table.from_pylist(rows, schema=schema)


def write_table_atomically(table: pa.Table, directory: str, name: str) -> str:
    """Write under a hidden temporary name, then rename into place; returns the final path."""
    try:
        FileSystems.mkdirs(directory)
    except OSError:
        pass  # already there (another worker may have made it a moment ago)
    final = FileSystems.join(directory, name)
    temporary = FileSystems.join(directory, f".{name}.{uuid.uuid4().hex}.tmp")
    with FileSystems.create(temporary) as f:
        pq.write_table(table, f, compression="zstd")
    if FileSystems.exists(final):
        FileSystems.delete([final])
    FileSystems.rename([temporary], [final])
    return final


class _WriteGroupFn(beam.DoFn):
    """Writes one (partition, shard) group of one window pane as one Parquet file."""

    def __init__(self, base, partition_columns, file_schema, prefix, sort_field):
        self._base = base
        self._partition_columns = partition_columns
        self._file_schema = file_schema
        self._prefix = prefix
        self._sort_field = sort_field
        # Rows written per dataset (its folder's name): what a run's closing summary reports.
        self._rows = beam.metrics.Metrics.counter(
            ROWS_WRITTEN, base.rstrip("/").rsplit("/", 1)[-1])

    def process(self, element, win=beam.DoFn.WindowParam, pane=beam.DoFn.PaneInfoParam):
        (partition_values, shard), rows = element
        rows = sorted(rows, key=lambda r: str(r.get(self._sort_field)))
        directory = partition_path(self._base, self._partition_columns, partition_values)
        name = file_name(self._prefix, win, pane.index if pane else 0, shard)
        path = write_table_atomically(rows_to_table(rows, self._file_schema), directory, name)
        LOGGER.debug("wrote %d rows to %s", len(rows), path)
        self._rows.inc(len(rows))
        yield path


class WritePartitionedParquet(beam.PTransform):
    """Writes dict rows to Hive-partitioned Parquet; outputs the paths of the files written.

    Args:
        base: the dataset's root folder (local or gs://).
        schema: pyarrow schema of a row, partition columns included.
        partition_columns: columns that become folders, in order.
        file_prefix: start of every file name (the run id, so runs never collide).
        sort_field: rows in a file are sorted by it (and it spreads rows over shards).
        num_shards: files per partition and window; bounds the rows held by one worker.
        window_secs: 0 in batch; in streaming, the fixed window length of a file.
    """

    def __init__(self, base: str, schema: pa.Schema, partition_columns: tuple[str, ...],
                 file_prefix: str, sort_field: str, num_shards: int = 1, window_secs: int = 0):
        super().__init__()
        self._base = base
        self._schema = schema
        self._partition_columns = tuple(partition_columns)
        missing = set(self._partition_columns) - set(schema.names)
        if missing:
            raise ValueError(f"partition columns {sorted(missing)} are not in the schema")
        self._file_schema = pa.schema(
            [f for f in schema if f.name not in self._partition_columns])
        self._prefix = file_prefix
        self._sort_field = sort_field
        self._num_shards = max(1, int(num_shards))
        self._window_secs = window_secs

    def expand(self, rows):
        if self._window_secs and isinstance(rows.windowing.windowfn, window.GlobalWindows):
            rows = rows | "WindowForFiles" >> file_windows(self._window_secs)
        columns, num_shards = self._partition_columns, self._num_shards
        sort_field = self._sort_field

        def key_by_file(row):
            shard = int(sample_fraction(str(row.get(sort_field))) * num_shards)
            return (tuple(row.get(c) for c in columns), shard), row

        return (
            rows
            | "KeyByPartitionAndShard" >> beam.Map(key_by_file)
            | "GroupPerFile" >> beam.GroupByKey()
            | "WriteParquetFiles" >> beam.ParDo(_WriteGroupFn(
                self._base, self._partition_columns, self._file_schema, self._prefix,
                self._sort_field))
        )


def utc_date(ts: datetime.datetime) -> str:
    """YYYY-MM-DD of a timestamp in UTC (the dt partition)."""
    return ts.astimezone(datetime.UTC).strftime("%Y-%m-%d")
