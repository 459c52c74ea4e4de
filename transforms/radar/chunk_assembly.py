"""Assembling real-time NEXRAD chunks into whole volumes, in streaming, as they arrive.

Chunks of one volume are keyed by (radar, volume start). They may arrive in any order and more
than once; the volume is emitted once, in sequence order, as soon as the end chunk and every
chunk before it are there. A volume still incomplete when the watermark passes its first
chunk's time plus ``timeout_secs`` goes to dead letters with the list of missing chunks.

With ``emit_sweeps``, each elevation cut is also emitted as soon as the chunk holding its
end-of-elevation radial and every chunk before it are there (``sweeps`` output: the chunks so
far and the cut's number), so a sweep can be QC'd minutes before its volume ends (the lowest
tilt of a MESO-SAILS volume repeats every 75-90 s). The chunks are read for that (their
records' radial status); a chunk that cannot be read ends no cut, and the volume's own
reading reports it.
"""

import time

import apache_beam as beam
from apache_beam import coders
from apache_beam.io.filesystems import FileSystems
from apache_beam.transforms import userstate
from apache_beam.transforms.timeutil import TimeDomain

from transforms.common.dead_letters import DEAD_LETTERS, dead_letter
from transforms.radar.level2_records import cut_ends
from transforms.radar.reading import IncompleteChunksError, order_chunks, parse_chunk_name

SWEEPS = "sweeps"


def read_chunk(path: str) -> bytes:
    with FileSystems.open(path) as f:
        return f.read()


def ended_cuts(path: str) -> list[int]:
    """The cuts a chunk ends (read now), in order; an unreadable chunk ends none."""
    try:
        return cut_ends(read_chunk(path))
    except OSError:
        return []


class _AssembleVolumeFn(beam.DoFn):
    """Keyed by (radar, volume start); values are (chunk path, the cuts it ends)."""

    CHUNKS = userstate.BagStateSpec("chunks", coders.StrUtf8Coder())
    DONE = userstate.ReadModifyWriteStateSpec("done", coders.BooleanCoder())
    FIRST_SEEN = userstate.ReadModifyWriteStateSpec("first_seen", coders.FloatCoder())
    # How many chunks from the first, in sequence, were read for cut ends (emit_sweeps).
    SCANNED = userstate.ReadModifyWriteStateSpec("scanned", coders.VarIntCoder())
    # "<chunk sequence>:<cut>" for every cut a received chunk ends (emit_sweeps).
    ENDS = userstate.BagStateSpec("ends", coders.StrUtf8Coder())
    TIMEOUT = userstate.TimerSpec("timeout", TimeDomain.WATERMARK)

    def __init__(self, timeout_secs: float, pipeline_name: str, run_id: str,
                 wall_clock_guard: bool, emit_sweeps: bool = False):
        self._emit_sweeps = emit_sweeps
        self._timeout_secs = timeout_secs
        self._pipeline_name = pipeline_name
        self._run_id = run_id
        self._wall_clock_guard = wall_clock_guard

    def process(self, element, timestamp=beam.DoFn.TimestampParam,
                chunks=beam.DoFn.StateParam(CHUNKS), done=beam.DoFn.StateParam(DONE),
                first_seen=beam.DoFn.StateParam(FIRST_SEEN),
                scanned=beam.DoFn.StateParam(SCANNED), ends=beam.DoFn.StateParam(ENDS),
                timeout=beam.DoFn.TimerParam(TIMEOUT)):
        key, (path, cuts) = element
        if done.read():
            return  # a late duplicate of a volume already emitted
        seen = list(chunks.read())
        if not seen:
            timeout.set(timestamp + self._timeout_secs)
            first_seen.write(time.time())
        if path in seen:
            return
        chunks.add(path)
        if self._emit_sweeps:
            sequence = parse_chunk_name(path).sequence
            for cut in cuts:
                ends.add(f"{sequence}:{cut}")
            yield from self._completed_cuts(key, [*seen, path], ends, scanned)
        try:
            ordered = order_chunks([parse_chunk_name(p) for p in [*seen, path]])
        except IncompleteChunksError:
            return
        done.write(True)
        chunks.clear()
        ends.clear()
        yield key, [c.path for c in ordered]

    @staticmethod
    def _completed_cuts(key, paths: list[str], ends, scanned):
        """The cuts ended by the chunks that now extend the run from chunk 1 without a gap."""
        by_sequence = {}
        for chunk in map(parse_chunk_name, paths):
            by_sequence.setdefault(chunk.sequence, chunk.path)
        done = scanned.read() or 0
        upto = done
        while upto + 1 in by_sequence:
            upto += 1
        if upto == done:
            return
        scanned.write(upto)
        prefix = tuple(by_sequence[n] for n in range(1, upto + 1))
        cuts_by_sequence: dict[int, list[int]] = {}
        for entry in ends.read():
            sequence, cut = map(int, entry.split(":"))
            cuts_by_sequence.setdefault(sequence, []).append(cut)
        for sequence in range(done + 1, upto + 1):
            for cut in sorted(set(cuts_by_sequence.get(sequence, []))):
                yield beam.pvalue.TaggedOutput(SWEEPS, (key, (prefix, cut)))

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

    Returns a tagged result: ``.volumes`` and ``.dead_letters`` (and ``.sweeps``, with
    ``emit_sweeps``: ((radar, volume start), (the chunks so far, the cut they end))).

    Args:
        timeout_secs: event time after a volume's first chunk before it is given up.
        pipeline_name: recorded on dead letters.
        run_id: recorded on dead letters.
        wall_clock_guard: also require ``timeout_secs`` of wall-clock time since the first
            chunk was seen. For polled sources, whose event time is the poll time: the local
            runner advances their watermark to the end of time after every bundle, which
            would time every volume out after its first chunk. Off for sources with real
            event times (TestStream, Pub/Sub), where a backlog must time out at once.
        emit_sweeps: also emit each elevation cut once its chunks are there (module notes).
    """

    def __init__(self, timeout_secs: float, pipeline_name: str, run_id: str,
                 wall_clock_guard: bool = False, emit_sweeps: bool = False):
        super().__init__()
        self._emit_sweeps = emit_sweeps
        self._fn = _AssembleVolumeFn(timeout_secs, pipeline_name, run_id, wall_clock_guard,
                                     emit_sweeps)

    def expand(self, chunks):
        # Chunks are read for their cut ends here, outside the keyed state, so the stateful
        # step stays quick: on Prism, with the reads inside it, chunks never reached it in 10 of
        # 20 runs (the volume timed out missing 1-8 of them); in none of 6 with the reads here.
        # Slow bundles of a stateful step being split is the suspect (cf. apache/beam#35771).
        scan = ended_cuts if self._emit_sweeps else (lambda path: [])
        return (
            chunks
            | "KeyByVolume" >> beam.MapTuple(
                lambda radar, path: ((radar, parse_chunk_name(path).volume_start.isoformat()),
                                     (path, scan(path)))
            ).with_output_types(tuple[tuple[str, str], tuple[str, list[int]]])
            | "AssembleVolume" >> beam.ParDo(self._fn).with_outputs(
                DEAD_LETTERS, *([SWEEPS] if self._emit_sweeps else []), main="volumes"))
