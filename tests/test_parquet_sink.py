"""The partitioned Parquet sink: layout, schema, idempotent names, streaming windows."""

import datetime
import os

import apache_beam as beam
import pyarrow as pa
import pyarrow.dataset as ds
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.transforms.window import TimestampedValue

from transforms.common.parquet_sink import WritePartitionedParquet

SCHEMA = pa.schema([("id", pa.string()), ("value", pa.float64()), ("part", pa.string())])


def _rows(n, part="a"):
    return [{"id": f"{part}-{i:03d}", "value": float(i), "part": part} for i in range(n)]


def _write(base, rows, prefix="run1", max_rows=1000):
    with TestPipeline() as p:
        _ = p | beam.Create(rows) | WritePartitionedParquet(
            str(base), SCHEMA, ("part",), prefix, max_rows_per_file=max_rows)


def _files(base):
    return sorted(os.path.relpath(os.path.join(d, f), base)
                  for d, _, fs in os.walk(base) for f in fs)


def test_batch_layout_and_round_trip(tmp_path):
    _write(tmp_path, _rows(30, "a") + _rows(5, "b"))
    files = _files(tmp_path)
    assert all(f.startswith(("part=a/run1-all-p000-", "part=b/run1-all-p000-")) for f in files)
    assert not [f for f in files if os.path.basename(f).startswith(".")]  # no temp files left
    table = ds.dataset(str(tmp_path), partitioning="hive").to_table()
    assert table.num_rows == 35
    assert set(table.schema.names) == {"id", "value", "part"}
    # The partition column lives in folder names only, not inside the files.
    assert pa.parquet.read_schema(os.path.join(tmp_path, files[0])).names == ["id", "value"]
    rows = sorted(table.to_pylist(), key=lambda r: r["id"])
    assert rows[0] == {"id": "a-000", "value": 0.0, "part": "a"}


def test_rerunning_the_same_run_replaces_instead_of_duplicating(tmp_path):
    _write(tmp_path, _rows(20))
    first = _files(tmp_path)
    _write(tmp_path, _rows(20))
    assert _files(tmp_path) == first
    assert ds.dataset(str(tmp_path), partitioning="hive").count_rows() == 20


def test_streaming_writes_one_complete_file_per_window_and_late_rows_as_a_new_pane(tmp_path):
    t0 = datetime.datetime(2026, 11, 27, 12, 0, 0, tzinfo=datetime.UTC).timestamp()
    rows = _rows(6)
    stream = (TestStream()
              .add_elements([TimestampedValue(r, t0 + i) for i, r in enumerate(rows[:3])])
              .advance_watermark_to(t0 + 10)
              .add_elements([TimestampedValue(r, t0 + 12 + i) for i, r in enumerate(rows[3:5])])
              .advance_watermark_to(t0 + 25)
              # Late for the first window: must still be written, as its second pane.
              .add_elements([TimestampedValue(rows[5], t0 + 5)])
              .advance_watermark_to_infinity())
    with TestPipeline(options=PipelineOptions(streaming=True)) as p:
        _ = p | stream | WritePartitionedParquet(
            str(tmp_path), SCHEMA, ("part",), "s1", window_secs=10)
    files = _files(tmp_path)
    assert files == [
        "part=a/s1-20261127T120000Z-20261127T120010Z-p000-00000.parquet",
        "part=a/s1-20261127T120000Z-20261127T120010Z-p001-00000.parquet",
        "part=a/s1-20261127T120010Z-20261127T120020Z-p000-00000.parquet",
    ]
    counts = [pa.parquet.read_table(os.path.join(tmp_path, f)).num_rows for f in files]
    assert counts == [3, 1, 2]


def test_files_roll_over_at_the_row_limit_and_batches_mix_with_dicts(tmp_path):
    batch = pa.RecordBatch.from_pylist(_rows(25, "a") + _rows(3, "b"), schema=SCHEMA)
    with TestPipeline() as p:
        _ = p | beam.Create([batch, *_rows(5, "c")], reshuffle=False) | WritePartitionedParquet(
            str(tmp_path), SCHEMA, ("part",), "r", max_rows_per_file=10)
    files = _files(tmp_path)
    counts = {f: pa.parquet.read_table(os.path.join(tmp_path, f)).num_rows for f in files}
    assert sorted(c for f, c in counts.items() if f.startswith("part=a/")) == [5, 10, 10]
    assert [c for f, c in counts.items() if f.startswith("part=b/")] == [3]
    assert [c for f, c in counts.items() if f.startswith("part=c/")] == [5]
    assert all(os.path.basename(f).startswith("r-all-p000-000") for f in files)
    table = ds.dataset(str(tmp_path), partitioning="hive").to_table()
    assert sorted(table.column("id").to_pylist()) == sorted(
        r["id"] for r in _rows(25, "a") + _rows(3, "b") + _rows(5, "c"))


def test_progress_lines_come_at_a_steady_rate_with_totals(monkeypatch):
    import logging

    from transforms.common import progress

    lines, clock = [], iter([0.0, 0.5, 1.0, 2.0, 12.0, 13.0, 30.0])  # created at 0
    monkeypatch.setattr(progress.time, "monotonic", lambda: next(clock))

    class Keep(logging.Handler):
        def emit(self, record):
            lines.append(record.getMessage())

    keep = Keep()
    progress.LOGGER.addHandler(keep)
    try:
        tracker = progress.Progress("volumes QC'd", "volume", total=6)
        for i in range(6):
            tracker.add(1, f"v{i}")
    finally:
        progress.LOGGER.removeHandler(keep)
    # One line 10 s after the start (4 done at t=12), none between, and one at the end.
    assert lines == ["volumes QC'd: 4 of 6 volumes (3.0 s per volume)  v3",
                     "volumes QC'd: 6 of 6 volumes (5.0 s per volume)  v5"]
