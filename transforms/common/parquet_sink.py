"""Writing rows as Hive-partitioned Parquet, in batch and streaming, with complete files only.

Layout: ``<base>/<col1>=<v1>/<col2>=<v2>/<prefix>-<window>-<pane>-<index>.parquet``. Partition
columns live in the folder names only (as Hive, BigQuery external tables and pyarrow.dataset
expect), not inside the files.

Elements are dict rows or Arrow record batches (the credit pipeline's element type); both are
written the same way.

How memory stays flat and files stay complete, never duplicated (the scheme of Beam's
``fileio.WriteToFiles``, with Arrow batches and Hive folders):
- each bundle streams its rows into one hidden temporary file per (window, partition), written
  a row group at a time and rolled over every ``max_rows_per_file`` rows, so no worker ever
  holds more than a row group per open file, however many rows a partition gets;
- only the names of the files a bundle committed travel on, grouped per partition and window;
  the finishing step renames them to their final names, numbered in a fixed order. A retried
  bundle's files from the failed attempt are never renamed (they stay hidden: pyarrow.dataset,
  Hive and BigQuery skip names starting with "." or "_"), and rerunning a run rewrites the same
  final names instead of adding copies.
In streaming the rows are put into fixed windows first; late rows are not dropped: they come as
later panes (new files), because losing a row silently would break the conservation rule.
"""

import datetime
import logging
import uuid

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems
from apache_beam.transforms import trigger, window
from apache_beam.utils.windowed_value import WindowedValue

from transforms.common.progress import Progress

LOGGER = logging.getLogger(__name__)
# Metrics namespace of the rows written per dataset.
ROWS_WRITTEN = "rows_written"
# Late rows are still written for this long after their window closed.
ALLOWED_LATENESS_SECS = 24 * 3600
DEFAULT_MAX_ROWS_PER_FILE = 1_000_000
# Rows buffered per open file before they go out as one Parquet row group.
ROW_GROUP_ROWS = 64 * 1024


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


def file_name(prefix: str, win, pane_index: int, index: int) -> str:
    return f"{prefix}-{window_tag(win)}-p{pane_index:03d}-{index:05d}.parquet"


def rows_to_table(rows: list[dict], schema: pa.Schema) -> pa.Table:
    """Rows -> table with exactly the schema's columns (extra keys ignored, missing -> null)."""
    return pa.Table.from_pylist(rows, schema=schema)


def conform(data: pa.RecordBatch | pa.Table, schema: pa.Schema) -> pa.Table:
    """A batch -> table with exactly the schema's columns, in its order and types (extra
    columns dropped, missing ones null)."""
    names = set(data.schema.names)
    columns = [data.column(f.name).cast(f.type) if f.name in names
               else pa.nulls(data.num_rows, f.type) for f in schema]
    return pa.Table.from_arrays(columns, schema=schema)


def split_by_partition(element, columns: tuple[str, ...]):
    """Yield (partition values, rows) per partition of one element: a dict row (rows is that
    dict) or a record batch (rows is the batch's slice of that partition)."""
    if isinstance(element, dict):
        yield tuple(element.get(c) for c in columns), element
        return
    if element.num_rows == 0:
        return
    keys = list(zip(*(element.column(c).to_pylist() for c in columns)))
    first = keys[0]
    if all(k == first for k in keys):  # the usual case: one model, one event date
        yield first, element
        return
    by_key: dict[tuple, list[int]] = {}
    for i, key in enumerate(keys):
        by_key.setdefault(key, []).append(i)
    for key, indices in by_key.items():
        yield key, element.take(pa.array(np.asarray(indices, dtype=np.int64)))


def write_table_atomically(table: pa.Table, directory: str, name: str) -> str:
    """Write under a hidden temporary name, then rename into place; returns the final path."""
    _make_dirs(directory)
    final = FileSystems.join(directory, name)
    temporary = FileSystems.join(directory, f".{name}.{uuid.uuid4().hex}.tmp")
    with FileSystems.create(temporary) as f:
        pq.write_table(table, f, compression="zstd")
    _replace(temporary, final)
    return final


def _make_dirs(directory: str) -> None:
    try:
        FileSystems.mkdirs(directory)
    except OSError:
        pass  # already there (another worker may have made it a moment ago)


def _replace(source: str, target: str) -> None:
    if FileSystems.exists(target):
        FileSystems.delete([target])
    FileSystems.rename([source], [target])


class _OpenFile:
    """One temporary Parquet file being written, a row group at a time."""

    def __init__(self, directory: str, schema: pa.Schema, prefix: str):
        _make_dirs(directory)
        self.directory = directory
        # Named by the run, so a failed run's leftovers can be found and removed.
        self.path = FileSystems.join(directory, f".{prefix}-{uuid.uuid4().hex}.parquet.tmp")
        self._schema = schema
        self._handle = FileSystems.create(self.path)
        self._writer = pq.ParquetWriter(self._handle, schema, compression="zstd")
        self._tables: list[pa.Table] = []
        self._dicts: list[dict] = []
        self._buffered = 0
        self.rows = 0

    def append(self, rows) -> None:
        if isinstance(rows, dict):
            self._dicts.append(rows)
            n = 1
        else:
            self._flush_dicts()
            self._tables.append(conform(rows, self._schema))
            n = rows.num_rows
        self._buffered += n
        self.rows += n
        if self._buffered >= ROW_GROUP_ROWS:
            self._write_row_group()

    def _flush_dicts(self) -> None:
        if self._dicts:
            self._tables.append(rows_to_table(self._dicts, self._schema))
            self._dicts = []

    def _write_row_group(self) -> None:
        self._flush_dicts()
        if self._tables:
            self._writer.write_table(pa.concat_tables(self._tables))
        self._tables, self._buffered = [], 0

    def close(self) -> None:
        self._write_row_group()
        self._writer.close()
        self._handle.close()

    def discard(self) -> None:
        """Give up the file (a write failed): close what can be closed, delete it."""
        for closing in (self._writer.close, self._handle.close):
            try:
                closing()
            except Exception:  # noqa: BLE001 - the file is being thrown away
                pass
        _delete_quietly(self.path)


def _delete_quietly(path: str) -> None:
    try:
        FileSystems.delete([path])
    except Exception:  # noqa: BLE001 - already gone, or the filesystem is failing
        LOGGER.warning("could not delete the unfinished file %s", path)


class _WriteBundleFilesFn(beam.DoFn):
    """Streams each bundle's rows into temporary files, one per (window, partition), rolled
    over every ``max_rows`` rows; emits (partition folder, temporary path) per file once the
    bundle is done."""

    def __init__(self, base, partition_columns, file_schema, max_rows, prefix):
        self._base = base
        self._prefix = prefix
        self._partition_columns = partition_columns
        self._file_schema = file_schema
        self._max_rows = max_rows
        # Rows written per dataset (its folder's name): what a run's closing summary reports.
        dataset = base.rstrip("/").rsplit("/", 1)[-1]
        self._rows = beam.metrics.Metrics.counter(ROWS_WRITTEN, dataset)
        self._dataset = dataset

    def setup(self):
        self._progress = Progress(f"{self._dataset} written", "row", quiet_below=10_000)

    def start_bundle(self):
        self._open: dict[tuple, _OpenFile] = {}
        self._closed: list[tuple] = []

    def process(self, element, win=beam.DoFn.WindowParam):
        try:
            self._write(element, win)
        except Exception:
            self._discard_bundle()
            raise

    def _discard_bundle(self) -> None:
        """A write failed (a full disk, a lost bucket): delete every temporary file of the
        bundle, so no unfinished file is left behind, and let the error fail the bundle."""
        for current in self._open.values():
            current.discard()
        for _, _, path in self._closed:
            _delete_quietly(path)
        self._open, self._closed = {}, []

    def _write(self, element, win) -> None:
        for values, rows in split_by_partition(element, self._partition_columns):
            key = (win, values)
            while True:
                current = self._open.get(key)
                if current is None:
                    directory = partition_path(self._base, self._partition_columns, values)
                    current = self._open[key] = _OpenFile(
                        directory, self._file_schema, self._prefix)
                room = self._max_rows - current.rows
                if isinstance(rows, dict) or rows.num_rows <= room:
                    part, rest = rows, None
                else:
                    part, rest = rows.slice(0, room), rows.slice(room)
                current.append(part)
                self._progress.add(1 if isinstance(part, dict) else part.num_rows)
                if current.rows >= self._max_rows:
                    self._close(key)
                if rest is None:
                    break
                rows = rest

    def _close(self, key) -> None:
        current = self._open[key]
        current.close()
        del self._open[key]  # after closing: a file that fails to close is discarded
        self._rows.inc(current.rows)
        self._closed.append((key[0], current.directory, current.path))

    def finish_bundle(self):
        try:
            for key in list(self._open):
                self._close(key)
        except Exception:
            self._discard_bundle()
            raise
        for win, directory, path in self._closed:
            yield WindowedValue((directory, path), win.max_timestamp(), [win])
        self._closed = []


class _FinishFilesFn(beam.DoFn):
    """Renames the committed temporary files of one partition and window pane to their final
    names, numbered in the order of their temporary names."""

    def __init__(self, prefix):
        self._prefix = prefix

    def process(self, element, win=beam.DoFn.WindowParam, pane=beam.DoFn.PaneInfoParam):
        directory, temporary = element
        pane_index = pane.index if pane else 0
        for index, path in enumerate(sorted(temporary)):
            final = FileSystems.join(directory, file_name(self._prefix, win, pane_index, index))
            _replace(path, final)
            LOGGER.debug("wrote %s", final)
            yield final


class WritePartitionedParquet(beam.PTransform):
    """Writes dict rows or Arrow record batches to Hive-partitioned Parquet; outputs the paths
    of the files written.

    Args:
        base: the dataset's root folder (local or gs://).
        schema: pyarrow schema of a row, partition columns included.
        partition_columns: columns that become folders, in order.
        file_prefix: start of every file name (the run id, so runs never collide).
        max_rows_per_file: a file is closed and the next one started after this many rows.
        window_secs: 0 in batch; in streaming, the fixed window length of a file.
    """

    def __init__(self, base: str, schema: pa.Schema, partition_columns: tuple[str, ...],
                 file_prefix: str, max_rows_per_file: int = DEFAULT_MAX_ROWS_PER_FILE,
                 window_secs: int = 0):
        super().__init__()
        self._base = base
        self._partition_columns = tuple(partition_columns)
        missing = set(self._partition_columns) - set(schema.names)
        if missing:
            raise ValueError(f"partition columns {sorted(missing)} are not in the schema")
        if max_rows_per_file < 1:
            raise ValueError(f"max_rows_per_file must be positive, got {max_rows_per_file}")
        self._file_schema = pa.schema(
            [f for f in schema if f.name not in self._partition_columns])
        self._prefix = file_prefix
        self._max_rows = int(max_rows_per_file)
        self._window_secs = window_secs

    def expand(self, rows):
        if self._window_secs and isinstance(rows.windowing.windowfn, window.GlobalWindows):
            rows = rows | "WindowForFiles" >> file_windows(self._window_secs)
        return (
            rows
            | "WriteTemporaryFiles" >> beam.ParDo(_WriteBundleFilesFn(
                self._base, self._partition_columns, self._file_schema, self._max_rows,
                self._prefix))
            | "GroupPerPartition" >> beam.GroupByKey()
            | "FinishFiles" >> beam.ParDo(_FinishFilesFn(self._prefix))
        )


def utc_date(ts: datetime.datetime) -> str:
    """YYYY-MM-DD of a timestamp in UTC (the dt partition)."""
    return ts.astimezone(datetime.UTC).strftime("%Y-%m-%d")
