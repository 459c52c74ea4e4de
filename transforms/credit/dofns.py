"""The credit pipeline's DoFns over record batches of requests: thin wrappers that route
rows; the logic lives in ``transforms.credit.requests``, ``.privacy`` and ``.rows``."""

import dataclasses
import datetime

import apache_beam as beam
import pyarrow.compute as pc

from models.config import ConfigError
from models.credit.dataset import Field
from models.credit.event_times import DEFAULT_WINDOW, EventTimeWindow
from transforms.common.dead_letters import DEAD_LETTERS, dead_letter
from transforms.credit import rows as credit_rows
from transforms.credit.offers import FAILED
from transforms.credit.privacy import Privacy, mask_misfit, read_key
from transforms.credit.requests import parse_requests, request_batch_schema


class ParseRequestBatchFn(beam.DoFn):
    """A list of (origin, line) -> one record batch of the valid requests; each invalid line
    becomes a dead letter on the ``dead_letters`` output, redacted as the data set says.

    Args:
        pipeline_name, run_id: stamped on dead letters.
        max_bytes: longer lines are dead letters.
        fields: the served data set's fields.
        privacy: its redaction without the key (``privacy_for(dataset, load_key=False)``);
            the key is read by each worker at setup from ``key_source``, so it never travels
            inside the pipeline's graph.
        key_source: the data set's ``privacy_key`` ("env:VAR" / "file:/path") or None.
    """

    def __init__(self, pipeline_name: str, run_id: str, max_bytes: int,
                 fields: tuple[Field, ...], privacy: Privacy | None = None,
                 key_source: str | None = None, key_id: str | None = None,
                 window: EventTimeWindow = DEFAULT_WINDOW):
        self._pipeline_name = pipeline_name
        self._run_id = run_id
        self._max_bytes = max_bytes
        self._fields = tuple(fields)
        self._privacy = privacy
        self._key_source = key_source
        self._key_id = key_id
        self._window = window
        self._schema = request_batch_schema(self._fields,
                                            privacy.pseudonymised if privacy else ())

    def setup(self):
        if self._privacy is not None and self._key_source:
            self._privacy = dataclasses.replace(self._privacy, key=read_key(self._key_source))
            if self._key_id and self._privacy.key_id != self._key_id:
                # A worker whose environment holds another key would pseudonymise under it
                # while the rows record the launch's fingerprint.
                raise ConfigError(f"the pseudonymisation key from {self._key_source} on this "
                                  f"worker (fingerprint {self._privacy.key_id}) is not the "
                                  f"one the run was launched with ({self._key_id})")

    def process(self, lines):
        now = datetime.datetime.now(datetime.UTC)
        privacy = self._privacy if self._privacy is not None and self._privacy.active else None
        batch, failed = parse_requests(lines, now, self._fields, self._schema, self._max_bytes,
                                       privacy, self._window)
        for origin, line, error in failed:
            raw = line.decode("utf-8", "backslashreplace") if isinstance(line, bytes) else line
            size = len(line) if isinstance(line, bytes) else None
            raw_hmac = None
            if privacy is not None:
                size = size or len(raw.encode("utf-8", errors="replace"))
                raw, raw_hmac = privacy.redact_raw(raw, error.field)
            else:
                raw = mask_misfit(raw, error.field, None)
            yield beam.pvalue.TaggedOutput(DEAD_LETTERS, dead_letter(
                pipeline=self._pipeline_name, stage=error.stage, error=error, raw=raw,
                origin=origin, run_id=self._run_id, failed_at=now, raw_bytes=size,
                raw_hmac=raw_hmac))
        if batch is not None:
            yield batch

# Output tag of the rows whose offer is asked for.
ASK = "ask"


class SplitForOffers(beam.DoFn):
    """Scored batch -> the rows needing an offer, cut to one offer call each (``ask`` output),
    and the other rows as one batch (main output)."""

    def __init__(self, call_size: int):
        self._call_size = call_size

    def process(self, batch):
        ask, settled = credit_rows.split_rows(batch, credit_rows.needs_offer_mask(batch))
        if settled.num_rows:
            yield settled
        for chunk in credit_rows.chunks(ask, self._call_size):
            yield beam.pvalue.TaggedOutput(ASK, chunk)


class SplitOfferFailures(beam.DoFn):
    """Stamped batch -> responses (main output) and, for each row whose offer call failed for
    good, a dead letter (``dead_letters`` output)."""

    def __init__(self, field_names: tuple[str, ...]):
        self._field_names = tuple(field_names)

    def process(self, batch):
        failed, ok = credit_rows.split_rows(batch, pc.equal(batch.column("offer_status"),
                                                            FAILED))
        if ok.num_rows:
            yield ok
        for row in failed.to_pylist():
            yield beam.pvalue.TaggedOutput(
                DEAD_LETTERS, credit_rows.offer_dead_letter(row, self._field_names))
