"""Exactly-once effects under at-least-once delivery: one request id, one answer.

Pub/Sub delivers at least once and clients retry, so the same ``request_id`` arrives twice in
normal operation. The first arrival wins: earliest event time, then origin (file and line, or
topic and message), so the choice is the same on every run and runner. A later arrival with the
same payload (event time and every field) is a ``duplicate``; one with a different payload is a
``conflict`` (the client reused an id for another request). Both are counted and dead-lettered
with the winner's origin in the message, after scoring and before the offer call: no second
response, offer call or sampled row. (Scoring an extra copy costs microseconds; deduplicating
before RunInference would put a stateful step in front of its model-update side input, which
the local streaming runner cannot run.)

Batch: rows are shuffled by a hash of their id into ``buckets`` groups (record batches, not
rows, travel through the shuffle), and each group is deduplicated with Arrow. The shuffle holds
every request of the run on the local runner (Dataflow spills it to its shuffle service), so
``--no_dedup`` turns it off for a backfill of requests already deduplicated when first scored.

Streaming: ``DeduplicateStream`` keeps the first arrival of each id in state until the
watermark passes its timestamp by ``horizon_secs`` (a timer clears it), so memory is bounded by
the ids of one horizon; there the first arrival processed wins (an answer given cannot be taken
back). On Dataflow with Pub/Sub, also set the source's ``id_label`` (a message attribute
carrying the request id) so Pub/Sub's own redeliveries are dropped before the pipeline.
"""

import zlib

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam import coders
from apache_beam.transforms import userstate, window
from apache_beam.transforms.window import TimestampedValue

from transforms.common.dead_letters import DEAD_LETTERS, dead_letter
from transforms.credit.rows import request_json

DUPLICATE, CONFLICT = "duplicate", "conflict"
DEFAULT_BUCKETS = 8
DEFAULT_HORIZON_SECS = 24 * 3600


def payload(row: dict, fields: tuple[str, ...]) -> tuple:
    """What must be equal for two arrivals to be the same request: event time and fields."""
    return (row["event_time"], *(row[f] for f in fields))


def bucket_of(request_id: str, buckets: int) -> int:
    """A stable bucket for an id (crc32: the same on every worker, unlike ``hash``)."""
    return zlib.crc32(request_id.encode("utf-8")) % buckets


def split_by_bucket(batch: pa.RecordBatch, buckets: int):
    """(bucket, the batch's rows of that bucket) for every bucket the batch has rows in."""
    ids = batch.column("request_id").to_pylist()
    keys = np.fromiter((bucket_of(i, buckets) for i in ids), dtype=np.int64, count=len(ids))
    for key in np.unique(keys):
        yield int(key), batch.filter(pa.array(keys == key))


def verdict(row: dict, winner: dict, fields: tuple[str, ...]) -> str:
    """``duplicate`` (same payload as the winner) or ``conflict``."""
    return DUPLICATE if payload(row, fields) == payload(winner, fields) else CONFLICT


def later_arrival_letter(row: dict, winner: dict, fields: tuple[str, ...], pipeline: str,
                         run_id: str) -> dict:
    """The dead letter of an arrival that lost to ``winner``, with the request as sent."""
    stage = verdict(row, winner, fields)
    beam.metrics.Metrics.counter("deduplication", stage).inc()
    same = "the same payload" if stage == DUPLICATE else "a different payload"
    message = (f"request_id {row['request_id']} already arrived from {winner['origin']} "
               f"(event time {winner['event_time'].isoformat()}); this arrival has {same}")
    return dead_letter(pipeline=pipeline, stage=stage, error=message,
                       error_class="DuplicateRequest" if stage == DUPLICATE
                       else "ConflictingRequest",
                       raw=request_json((row["request_id"], row["event_time"]),
                                        {f: row[f] for f in fields}),
                       origin=row["origin"], run_id=run_id)


def first_arrivals(table: pa.Table) -> tuple[pa.Table, list[tuple[dict, dict]]]:
    """(the table without later arrivals, [(later arrival, its winner)] as dict rows)."""
    if pc.count_distinct(table.column("request_id")).as_py() == table.num_rows:
        return table, []
    order = pc.sort_indices(table, sort_keys=[("request_id", "ascending"),
                                              ("event_time", "ascending"),
                                              ("origin", "ascending")])
    ordered = table.take(order)
    ids = ordered.column("request_id").to_pylist()
    first = np.ones(len(ids), dtype=bool)
    first[1:] = np.asarray(ids[1:], dtype=object) != np.asarray(ids[:-1], dtype=object)
    losers_at = np.flatnonzero(~first)
    # Each row's group starts at the last first-arrival at or before it.
    group_start = np.maximum.accumulate(np.where(first, np.arange(len(ids)), 0))
    losers = ordered.take(pa.array(losers_at)).to_pylist()
    winners = ordered.take(pa.array(group_start[losers_at])).to_pylist()
    return ordered.filter(pa.array(first)), list(zip(losers, winners))


class _FirstArrivalsFn(beam.DoFn):
    """(bucket, [record batches]) -> one record batch of first arrivals; later arrivals ->
    dead letters (stage ``duplicate`` or ``conflict``), counted."""

    def __init__(self, fields: tuple[str, ...], pipeline: str, run_id: str):
        self._fields, self._pipeline, self._run_id = tuple(fields), pipeline, run_id

    def process(self, element):
        _, batches = element
        table = pa.Table.from_batches(list(batches))
        kept, later = first_arrivals(table)
        for row, winner in later:
            yield beam.pvalue.TaggedOutput(DEAD_LETTERS, later_arrival_letter(
                row, winner, self._fields, self._pipeline, self._run_id))
        yield from kept.combine_chunks().to_batches()


class DeduplicateBatches(beam.PTransform):
    """Batch: record batches of requests (with request_id, event_time, origin and the data
    set's ``fields``) -> the same without later arrivals of an id (main) and their dead
    letters (``dead_letters``)."""

    def __init__(self, fields: tuple[str, ...], pipeline: str, run_id: str,
                 buckets: int = DEFAULT_BUCKETS):
        super().__init__()
        self._fields, self._pipeline, self._run_id = tuple(fields), pipeline, run_id
        self._buckets = buckets

    def expand(self, batches):
        return (batches
                | "SplitByIdBucket" >> beam.FlatMap(split_by_bucket, self._buckets)
                | "GroupIdBucket" >> beam.GroupByKey()
                | "KeepFirstArrivals" >> beam.ParDo(_FirstArrivalsFn(
                    self._fields, self._pipeline, self._run_id)).with_outputs(
                    DEAD_LETTERS, main="requests"))


class _FirstArrivalStateFn(beam.DoFn):
    """Streaming, keyed by request id: the first arrival passes and is remembered until the
    watermark is ``horizon_secs`` past its timestamp; later ones become dead letters. In
    streaming the first to be processed wins: an answer already given cannot be taken back."""

    FIRST = userstate.ReadModifyWriteStateSpec("first", coders.PickleCoder())
    EXPIRY = userstate.TimerSpec("expiry", userstate.TimeDomain.WATERMARK)

    def __init__(self, fields: tuple[str, ...], pipeline: str, run_id: str,
                 horizon_secs: float):
        self._fields, self._pipeline, self._run_id = tuple(fields), pipeline, run_id
        self._horizon = horizon_secs

    def process(self, element, timestamp=beam.DoFn.TimestampParam,
                first=beam.DoFn.StateParam(FIRST), expiry=beam.DoFn.TimerParam(EXPIRY)):
        _, row = element
        winner = first.read()
        if winner is None:
            first.write(row)
            expiry.set(timestamp + self._horizon)
            yield row
            return
        yield beam.pvalue.TaggedOutput(DEAD_LETTERS, later_arrival_letter(
            row, winner, self._fields, self._pipeline, self._run_id))

    @userstate.on_timer(EXPIRY)
    def forget(self, first=beam.DoFn.StateParam(FIRST)):
        first.clear()


class _RowsByIdFn(beam.DoFn):
    """Record batch -> (request id, row) per row, stamped inside the batch's own window (its
    last instant), so windowing the kept rows again puts each back where it came from: a batch
    emitted by a timer can carry the window's end, which belongs to the next window."""

    def process(self, batch, win=beam.DoFn.WindowParam):
        stamp = win.max_timestamp()
        for row in batch.to_pylist():
            yield TimestampedValue((row["request_id"], row), stamp)


class DeduplicateStream(beam.PTransform):
    """Streaming: record batches of requests -> record batches of first arrivals (main) and
    dead letters for arrivals of an id seen within ``horizon_secs`` (``dead_letters``), both
    in ``windowing`` (a ``WindowInto``). State is per window and a duplicate may land in
    another window, so ids are remembered in the global window.

    Ids are state keys, so rows travel one by one here: streaming rates, not batch ones.
    """

    def __init__(self, fields: tuple[str, ...], pipeline: str, run_id: str, schema: pa.Schema,
                 windowing, horizon_secs: float = DEFAULT_HORIZON_SECS):
        super().__init__()
        self._fields, self._pipeline, self._run_id = tuple(fields), pipeline, run_id
        self._schema, self._windowing, self._horizon = schema, windowing, horizon_secs

    def expand(self, batches):
        schema = self._schema
        kept = (batches
                | "RowsById" >> beam.ParDo(_RowsByIdFn()).with_output_types(
                    tuple[str, dict])  # a deterministic coder for state keys
                | "GlobalWindowForDedup" >> beam.WindowInto(window.GlobalWindows())
                | "FirstArrivalWithinHorizon" >> beam.ParDo(_FirstArrivalStateFn(
                    self._fields, self._pipeline, self._run_id, self._horizon)).with_outputs(
                    DEAD_LETTERS, main="requests"))
        # Back into the caller's windows (the rows kept their timestamps), then batched.
        requests = (kept.requests
                    | "RewindowRequests" >> self._windowing
                    | "RebatchFirstArrivals" >> beam.BatchElements(
                        min_batch_size=1, max_batch_size=512)
                    | "RowsToBatch" >> beam.Map(
                        lambda rows: pa.RecordBatch.from_pylist(rows, schema=schema)))
        return {"requests": requests,
                DEAD_LETTERS: kept[DEAD_LETTERS] | "WindowDeadLetters" >> self._windowing}
