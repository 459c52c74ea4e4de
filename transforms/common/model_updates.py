"""Following a registry alias in streaming: RunInference's model-update side input.

``FollowAlias`` reads the alias every ``poll_secs`` and emits the version it accepts as Beam's
``ModelMetadata`` (model file path, version), exactly one per fixed window like the main input,
so each window of requests is scored by the model its side window names and a running pipeline
picks up a moved ``production`` alias without a restart.

Each window's element is emitted ahead, by the poll before the window opens (at least half a
window before, and for every window until the next poll), not combined at the window's end:
a runner that reads a side window before its pane is out (Prism does) gives RunInference an
empty side input, which reloads the model for every batch and keeps the version loaded last,
so a live move was followed or not depending on the phase of the two polls. A move reaches the
windows that open more than half a window after the poll that read it: within
``poll_secs`` plus a window and a half.

A version is taken only when its file matches its manifest's sha256, its schema hash equals the
running graph's (another schema needs a new run: the graph's parsing and Parquet columns are
built from it), and it passes its smoke checks; otherwise the previous version keeps serving,
a warning is logged and the ``alias_updates_refused`` counter counts it.
"""

import hashlib
import json
import logging

import apache_beam as beam
from apache_beam.ml.inference.base import ModelMetadata
from apache_beam.transforms import window
from apache_beam.transforms.periodicsequence import PeriodicImpulse
from apache_beam.utils.timestamp import MAX_TIMESTAMP, Timestamp

from models import registry as model_registry

LOGGER = logging.getLogger(__name__)


def schema_hash(manifest: dict) -> str:
    """sha256 of a version's input schema (what the graph's parsing and columns depend on)."""
    schema = manifest.get("input_schema")
    return hashlib.sha256(json.dumps(schema, sort_keys=True).encode("utf-8")).hexdigest()


def accept_version(registry: str, name: str, alias: str, schema: str,
                   smoke=None) -> tuple[model_registry.ModelRef | None, str | None]:
    """The version an alias names, if a running graph with input schema hash ``schema`` may
    swap to it.

    Returns:
        (the version, None), or (None, the reason it is refused).
    """
    try:
        ref = model_registry.resolve(registry, name, alias, verify=True)
    except model_registry.RegistryError as error:
        return None, str(error)
    if schema_hash(ref.manifest) != schema:
        return None, (f"{name} {ref.version} has another input schema than the running graph; "
                      f"start a new run to serve it")
    problems = smoke(ref) if smoke else []
    if problems:
        return None, f"{name} {ref.version} fails its smoke checks: {'; '.join(problems)}"
    return ref, None


class _FollowAliasFn(beam.DoFn):
    """Tick -> ModelMetadata of the accepted version (the previous one while a move is
    refused)."""

    def __init__(self, registry: str, name: str, alias: str, initial: model_registry.ModelRef,
                 smoke: bool, window_secs: float = 0, poll_secs: float = 0):
        self._window_secs = window_secs
        self._poll_secs = poll_secs
        self._registry = registry
        self._name = name
        self._alias = alias
        self._schema = schema_hash(initial.manifest)
        self._initial = (initial.version, initial.path)
        self._smoke = smoke
        self._refused = beam.metrics.Metrics.counter("model_updates", "alias_updates_refused")

    def setup(self):
        self._current = self._initial
        self._seen = None
        self._emitted_until = None  # start of the last window given its element

    def process(self, tick):
        try:
            record = model_registry.read_alias(self._registry, self._name, self._alias)
        except model_registry.RegistryError:
            record = None
        named = record["version"] if record else None
        if named and named != self._current[0] and named != self._seen:
            self._seen = named  # judge each move once
            from models.promotion import smoke_problems

            ref, reason = accept_version(self._registry, self._name, named, self._schema,
                                         smoke_problems if self._smoke else None)
            if ref is None:
                self._refused.inc()
                LOGGER.warning("%s %s moved to %s, refused: %s; %s keeps serving", self._name,
                               self._alias, named, reason, self._current[0])
            else:
                LOGGER.info("%s %s moved: %s -> %s", self._name, self._alias,
                            self._current[0], ref.version)
                self._current = (ref.version, ref.path)
        version, path = self._current
        update = ModelMetadata(model_id=path, model_name=version)
        if not self._window_secs:
            yield update
            return
        for start in windows_ahead(float(tick), self._window_secs, self._poll_secs,
                                   self._emitted_until):
            self._emitted_until = start
            # The window the poll is in is stamped with the poll's time, not earlier.
            yield window.TimestampedValue(update, max(start, float(tick)))


def windows_ahead(now: float, window_secs: float, poll_secs: float,
                  emitted_until: float | None) -> list[float]:
    """Starts of the fixed windows a poll at ``now`` gives their element: every window not given
    one yet, from the one ``now`` is in, up to the last that opens before the next poll plus
    half a window."""
    first = (now // window_secs) * window_secs
    if emitted_until is not None:
        first = max(first, emitted_until + window_secs)
    horizon = now + poll_secs + window_secs / 2
    starts = []
    while first <= horizon:
        starts.append(first)
        first += window_secs
    return starts


class FollowAlias(beam.PTransform):
    """Streaming: the accepted version of a registry alias, one ModelMetadata per window,
    emitted ahead of the window.

    Args:
        registry, name, alias: what to follow.
        initial: the version the run started with (and the schema it must keep).
        poll_secs: how often the alias is read.
        window_secs: the main input's fixed window length.
        stop_after_secs: stop polling after this long (0 = never), as the sources do.
        smoke: run the smoke checks before taking a version.
    """

    def __init__(self, registry: str, name: str, alias: str, initial, poll_secs: float,
                 window_secs: int, stop_after_secs: float = 0, smoke: bool = True):
        super().__init__()
        self._fn = _FollowAliasFn(registry, name, alias, initial, smoke, window_secs, poll_secs)
        self._poll_secs = poll_secs
        self._window_secs = window_secs
        self._stop_after_secs = stop_after_secs

    def expand(self, pbegin):
        start = Timestamp.now()
        stop = start + self._stop_after_secs if self._stop_after_secs else MAX_TIMESTAMP
        return (pbegin
                | "PollAlias" >> PeriodicImpulse(start_timestamp=start, stop_timestamp=stop,
                                                 fire_interval=self._poll_secs)
                | "AcceptedVersion" >> beam.ParDo(self._fn)
                | "ModelUpdates" >> ModelUpdateWindows(self._window_secs))


class ModelUpdateWindows(beam.PTransform):
    """ModelMetadata elements, one per fixed window by construction, -> those windows.

    No combine: a combine's output waits for the end of its window, after the main input of
    that window has been scored on a runner that does not wait for side inputs."""

    def __init__(self, window_secs: int):
        super().__init__()
        self._window_secs = window_secs

    def expand(self, updates):
        return updates | "UpdateWindows" >> beam.WindowInto(
            window.FixedWindows(self._window_secs))
