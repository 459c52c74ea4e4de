"""Assembling real-time NEXRAD chunks into whole volumes, in streaming, as they arrive.

Chunks of one volume are keyed by (radar, volume start). They may arrive in any order and more
than once; the volume is emitted once, in sequence order, as soon as the end chunk and every
chunk before it are there. A volume still incomplete when the watermark passes its first
chunk's time plus ``timeout_secs`` goes to dead letters with the list of missing chunks.
"""

import time

import apache_beam as beam
from apache_beam import coders
from apache_beam.transforms import userstate
from apache_beam.transforms.timeutil import TimeDomain

from transforms.common.dead_letters import DEAD_LETTERS, dead_letter
from transforms.radar.reading import IncompleteChunksError, order_chunks, parse_chunk_name


class _AssembleVolumeFn(beam.DoFn):
    """Keyed by (radar, volume start); values are chunk paths."""

    CHUNKS = userstate.BagStateSpec("chunks", coders.StrUtf8Coder())
    DONE = userstate.ReadModifyWriteStateSpec("done", coders.BooleanCoder())
    FIRST_SEEN = userstate.ReadModifyWriteStateSpec("first_seen", coders.FloatCoder())
    TIMEOUT = userstate.TimerSpec("timeout", TimeDomain.WATERMARK)

    def __init__(self, timeout_secs: float, pipeline_name: str, run_id: str,
                 wall_clock_guard: bool):
        self._timeout_secs = timeout_secs
        self._pipeline_name = pipeline_name
        self._run_id = run_id
        self._wall_clock_guard = wall_clock_guard

    def process(self, element, timestamp=beam.DoFn.TimestampParam,
                chunks=beam.DoFn.StateParam(CHUNKS), done=beam.DoFn.StateParam(DONE),
                first_seen=beam.DoFn.StateParam(FIRST_SEEN),
                timeout=beam.DoFn.TimerParam(TIMEOUT)):
        key, path = element
        if done.read():
            return  # a late duplicate of a volume already emitted
        seen = list(chunks.read())
        if not seen:
            timeout.set(timestamp + self._timeout_secs)
            first_seen.write(time.time())
        if path in seen:
            return
        chunks.add(path)
        try:
            ordered = order_chunks([parse_chunk_name(p) for p in [*seen, path]])
        except IncompleteChunksError:
            return
        done.write(True)
        chunks.clear()
        yield key, [c.path for c in ordered]

    @userstate.on_timer(TIMEOUT)
    def on_timeout(self, key=beam.DoFn.KeyParam, fired=beam.DoFn.TimestampParam,
                   chunks=beam.DoFn.StateParam(CHUNKS), done=beam.DoFn.StateParam(DONE),
                   first_seen=beam.DoFn.StateParam(FIRST_SEEN),
                   timeout=beam.DoFn.TimerParam(TIMEOUT)):
        waited = time.time() - (first_seen.read() or 0.0)
        if self._wall_clock_guard and waited < self._timeout_secs and not done.read():
            # The watermark ran ahead of the wall clock (the local runner advances it at the
            # end of every bundle of a polled source): not a real timeout yet, look again.
            timeout.set(fired + max(1.0, self._timeout_secs - waited))
            return
        paths = sorted(chunks.read())
        chunks.clear()
        if done.read() or not paths:
            return
        done.write(True)
        try:
            order_chunks([parse_chunk_name(p) for p in paths])
        except IncompleteChunksError as error:
            radar, start = key
            yield beam.pvalue.TaggedOutput(DEAD_LETTERS, dead_letter(
                pipeline=self._pipeline_name, stage="assemble",
                error=f"{radar} volume {start}: {error} after {self._timeout_secs:g}s; "
                      f"received {len(paths)} chunks",
                error_class="IncompleteVolume", raw=None, origin=";".join(paths),
                run_id=self._run_id))


class AssembleVolumes(beam.PTransform):
    """(radar, chunk path) -> ((radar, volume start), ordered paths) and dead letters.

    Returns a tagged result: ``.volumes`` and ``.dead_letters``.

    Args:
        timeout_secs: event time after a volume's first chunk before it is given up.
        pipeline_name: recorded on dead letters.
        run_id: recorded on dead letters.
        wall_clock_guard: also require ``timeout_secs`` of wall-clock time since the first
            chunk was seen. For polled sources, whose event time is the poll time: the local
            runner advances their watermark to the end of time after every bundle, which
            would time every volume out after its first chunk. Off for sources with real
            event times (TestStream, Pub/Sub), where a backlog must time out at once.
    """

    def __init__(self, timeout_secs: float, pipeline_name: str, run_id: str,
                 wall_clock_guard: bool = False):
        super().__init__()
        self._fn = _AssembleVolumeFn(timeout_secs, pipeline_name, run_id, wall_clock_guard)

    def expand(self, chunks):
        return (
            chunks
            | "KeyByVolume" >> beam.MapTuple(
                lambda radar, path: ((radar, parse_chunk_name(path).volume_start.isoformat()),
                                     path)).with_output_types(tuple[tuple[str, str], str])
            | "AssembleVolume" >> beam.ParDo(self._fn).with_outputs(DEAD_LETTERS,
                                                                   main="volumes"))
