"""Reading line-oriented inputs: batch globs and a watched landing directory."""

import apache_beam as beam
from apache_beam import coders
from apache_beam.io import fileio
from apache_beam.io.filesystems import FileSystems
from apache_beam.transforms import userstate
from apache_beam.utils.timestamp import MAX_TIMESTAMP, Timestamp


def read_lines(path: str):
    """Yield (``path:line_number``, line bytes without the newline) for every line of a file."""
    with FileSystems.open(path) as f:
        for number, line in enumerate(f, start=1):
            yield f"{path}:{number}", line.rstrip(b"\r\n")


class _FirstSightingFn(beam.DoFn):
    """Passes each path the first time it is seen (polls re-list every file every time).

    State grows by one flag per file name; fine for a landing directory of thousands of
    files. For millions, use bucket notifications on Pub/Sub instead of polling.
    """

    SEEN = userstate.ReadModifyWriteStateSpec("seen", coders.BooleanCoder())

    def process(self, element, seen=beam.DoFn.StateParam(SEEN)):
        path, _ = element
        if not seen.read():
            seen.write(True)
            yield path


class ReadLinesFromFiles(beam.PTransform):
    """Batch: every line of the files matching a glob, as (``path:line_number``, line bytes).

    Built from Create, ParDo and a reshuffle only, so it runs on every runner, Dask included
    (Beam's text source is a splittable DoFn, which the Dask runner cannot run). One file is
    read by one worker: split very large inputs into several files.

    Raises (at run time):
        the runner's error wrapping ``BeamIOError`` when the glob matches no file.
    """

    def __init__(self, pattern: str):
        super().__init__()
        self._pattern = pattern

    def expand(self, pbegin):
        return (pbegin
                | "MatchInputFiles" >> fileio.MatchFiles(
                    self._pattern, empty_match_treatment=fileio.EmptyMatchTreatment.DISALLOW)
                | "InputPath" >> beam.Map(lambda metadata: metadata.path)
                | "SpreadInputFiles" >> beam.Reshuffle()
                | "ReadInputLines" >> beam.FlatMap(read_lines))


class WatchNewFiles(beam.PTransform):
    """Streaming: the path of every new file matching ``pattern``, once.

    Files must appear complete (write elsewhere or under a name the pattern does not match,
    then rename), as with any object-store landing bucket.

    Args:
        pattern: glob of the files to pick up, e.g. ``landing/*.jsonl``.
        poll_secs: how often the directory is listed.
        stop_after_secs: stop polling after this long (0 = never) so the pipeline drains.
    """

    def __init__(self, pattern: str, poll_secs: float = 1.0, stop_after_secs: float = 0):
        super().__init__()
        self._pattern = pattern
        self._poll_secs = poll_secs
        self._stop_after_secs = stop_after_secs

    def expand(self, pbegin):
        start = Timestamp.now()
        stop = start + self._stop_after_secs if self._stop_after_secs else MAX_TIMESTAMP
        # Beam's own de-duplication (Watch) ends at once on the Python direct runner; polling
        # everything and keeping first sightings works on every runner.
        return (
            pbegin
            | "PollDirectory" >> fileio.MatchContinuously(
                self._pattern, interval=self._poll_secs, has_deduplication=False,
                start_timestamp=start, stop_timestamp=stop)
            | "KeyByPath" >> beam.Map(lambda metadata: (metadata.path, 0)).with_output_types(
                tuple[str, int])
            | "FirstSighting" >> beam.ParDo(_FirstSightingFn())
        )


class WatchDirectory(beam.PTransform):
    """Streaming: every line of every new file matching ``pattern``, as (path:line, bytes).

    Args: as ``WatchNewFiles``.
    """

    def __init__(self, pattern: str, poll_secs: float = 1.0, stop_after_secs: float = 0):
        super().__init__()
        self._new_files = WatchNewFiles(pattern, poll_secs, stop_after_secs)

    def expand(self, pbegin):
        return (pbegin
                | "WatchNewFiles" >> self._new_files
                | "ReadNewFile" >> beam.FlatMap(read_lines))
