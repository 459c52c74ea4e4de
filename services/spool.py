"""The online services' write-ahead spool: an answer is released only once its row is on disk.

``append`` hands a row to a committer thread that writes every row waiting at that moment as
one segment (an Arrow IPC file per kind, created under a temporary name, fsynced, renamed,
the folder fsynced) and then releases all their callers: one fsync per group, not per
request. ``flush`` turns the segments into Parquet through the pipelines' sink functions
(partitions, columns, atomic files) and then deletes them; ``recover`` does the same at start
for the segments a killed process left.

A flush is made repeatable by a plan written first (``flush.json``: the segments and the name
of the files they become): a process killed mid-flush leaves the plan, and the next start
either writes the same files again under the same names (every segment still there: no file
can be half-done or doubled) or, when some segments are already deleted (so every file was
written), only deletes the rest.

The folder is locked (``fcntl.flock``) for the life of the process: a second service on the
same output is refused at start.
"""

import dataclasses
import fcntl
import json
import logging
import os
import queue
import threading
import time

import pyarrow as pa
import pyarrow.ipc as ipc

from transforms.common.parquet_sink import (
    conform,
    partition_path,
    rows_to_table,
    split_by_partition,
    write_table_atomically,
)

LOGGER = logging.getLogger(__name__)
PLAN = "flush.json"
LOCK = ".lock"
SUFFIX = ".arrow"


class SpoolError(Exception):
    """The spool cannot be used (locked by another process, or not writable)."""


@dataclasses.dataclass(frozen=True)
class Sink:
    """Where one kind of row ends: ``<base>/<partition columns>/<name>.parquet``."""

    base: str
    schema: pa.Schema
    partition_columns: tuple[str, ...]


def _fsync_folder(folder: str) -> None:
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


class Spool:
    """Rows of several kinds (``sinks`` by name), durable before ``append`` returns."""

    def __init__(self, folder: str, sinks: dict[str, Sink], tag: str):
        self.folder = folder
        self.sinks = sinks
        self._tag = tag  # the writing run: part of every segment's name
        try:
            os.makedirs(folder, exist_ok=True)
            self._lock_file = open(os.path.join(folder, LOCK), "a+")  # noqa: SIM115 - held
        except OSError as error:
            raise SpoolError(f"the spool {folder} cannot be made ({error.strerror or error})"
                             ) from None
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_file.close()
            raise SpoolError(f"another service is writing to {folder}: give each one its own "
                             f"--output") from None
        self._queue: queue.Queue = queue.Queue()
        self._segments = 0
        self._flush_lock = threading.Lock()
        self._closed = False
        self._committer = threading.Thread(target=self._commit_loop, name="spool-commit",
                                           daemon=True)
        self._committer.start()

    # --- writing ---------------------------------------------------------------------------

    def append(self, kind: str, row: dict) -> None:
        """Return once ``row`` is on disk.

        Raises:
            SpoolError: the segment could not be written (the caller must not answer 200).
        """
        if self._closed:
            raise SpoolError("the spool is closed")
        done = threading.Event()
        outcome: list = []
        self._queue.put((kind, row, done, outcome))
        done.wait()
        if outcome:
            raise SpoolError(outcome[0])

    def _commit_loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            group = [first]
            while True:  # everything waiting now joins this group
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self._queue.put(None)
                    break
                group.append(item)
            error = None
            try:
                self._write_segment(group)
            except Exception as failure:  # noqa: BLE001 - every waiter must be released
                error = (f"the spool segment could not be written: {type(failure).__name__}: "
                         f"{failure}")
                LOGGER.error("%s", error)
            for _, _, done, outcome in group:
                if error:
                    outcome.append(error)
                done.set()

    def _write_segment(self, group: list) -> None:
        self._segments += 1
        stem = f"{time.time_ns():020d}-{self._tag}-{self._segments:06d}"
        for kind, sink in self.sinks.items():
            rows = [row for k, row, _, _ in group if k == kind]
            if not rows:
                continue
            table = rows_to_table(rows, sink.schema)
            final = os.path.join(self.folder, f"{stem}.{kind}{SUFFIX}")
            temporary = f"{final}.tmp"
            with open(temporary, "wb") as f:
                with ipc.new_file(f, table.schema) as writer:
                    writer.write_table(table)
                f.flush()
                os.fsync(f.fileno())
            os.rename(temporary, final)
        _fsync_folder(self.folder)

    # --- turning segments into Parquet --------------------------------------------------------

    def _segment_files(self) -> list[str]:
        return sorted(n for n in os.listdir(self.folder) if n.endswith(SUFFIX))

    def flush(self) -> int:
        """Write every segment on disk now as Parquet and delete it; returns the rows written."""
        with self._flush_lock:
            files = self._segment_files()
            if not files:
                return 0
            plan = {"segments": files, "name": files[0].split(".", 1)[0]}
            path = os.path.join(self.folder, PLAN)
            with open(f"{path}.tmp", "w", encoding="utf-8") as f:
                json.dump(plan, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(f"{path}.tmp", path)
            _fsync_folder(self.folder)
            return self._carry_out(plan)

    def _carry_out(self, plan: dict) -> int:
        rows = 0
        for kind, sink in self.sinks.items():
            tables = [self._read(name) for name in plan["segments"]
                      if name.endswith(f".{kind}{SUFFIX}")]
            if not tables:
                continue
            table = pa.concat_tables(tables)
            rows += table.num_rows
            file_schema = pa.schema([f for f in sink.schema
                                     if f.name not in sink.partition_columns])
            for values, part in split_by_partition(table, sink.partition_columns):
                write_table_atomically(conform(part, file_schema),
                                       partition_path(sink.base, sink.partition_columns, values),
                                       f"{plan['name']}.parquet")
        self._finish(plan)
        return rows

    def _read(self, name: str) -> pa.Table:
        with open(os.path.join(self.folder, name), "rb") as f:
            return ipc.open_file(f).read_all()

    def _finish(self, plan: dict) -> None:
        for name in plan["segments"]:
            try:
                os.remove(os.path.join(self.folder, name))
            except FileNotFoundError:
                pass
        os.remove(os.path.join(self.folder, PLAN))
        _fsync_folder(self.folder)

    def recover(self) -> int:
        """At start: finish a flush a killed process left, then flush what it spooled;
        returns the rows recovered."""
        for name in os.listdir(self.folder):
            if name.endswith(".tmp"):  # a segment never renamed: its callers got no answer
                os.remove(os.path.join(self.folder, name))
        rows = 0
        path = os.path.join(self.folder, PLAN)
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                plan = json.load(f)
            present = set(self._segment_files())
            if set(plan["segments"]) <= present:
                rows += self._carry_out(plan)  # the same files, under the same names
            else:
                self._finish(plan)  # deleting had begun: every file was written
        return rows + self.flush()

    def close(self) -> None:
        """Commit what is queued, flush everything, release the folder."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        self._committer.join(timeout=30)
        self.flush()
        self._lock_file.close()
