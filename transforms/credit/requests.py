"""Parsing and validating credit requests (one JSON object per line).

A request is ``{"request_id": str, "event_time": ISO-8601 with zone, <the data set's fields>}``,
the fields being those of the data set the served model version was trained on (its manifest).
Category codes must be short strings but may be unknown (the model's out-of-vocabulary bucket
handles them); numbers must be real numbers inside the field's range; a field the data set lets
be missing may be null or absent. Anything else is rejected with a message that names the field
and the problem.
"""

import dataclasses
import datetime
import json
import math

import apache_beam as beam

from models.credit.dataset import NUMERIC, Field
from transforms.common.dead_letters import DEAD_LETTERS, dead_letter

ID_FIELDS = ("request_id", "event_time")
MAX_REQUEST_ID_LENGTH = 128
DEFAULT_MAX_REQUEST_BYTES = 64 * 1024


class RequestError(ValueError):
    """A request that cannot be scored; ``stage`` is "parse" or "validate"."""

    def __init__(self, stage: str, message: str):
        super().__init__(message)
        self.stage = stage


@dataclasses.dataclass(frozen=True)
class CreditRequest:
    """A validated request.

    Attributes:
        request_id: the caller's id; also the prediction id.
        event_time: when the client asked (UTC).
        received_at: when the pipeline read it (UTC); latency is measured from here.
        fields: the applicant fields, numbers as float, codes as str, missing as None.
        origin: where it came from (file and line, topic).
    """

    request_id: str
    event_time: datetime.datetime
    received_at: datetime.datetime
    fields: dict
    origin: str


def parse_event_time(value) -> datetime.datetime:
    """ISO-8601 timestamp with a zone -> aware UTC datetime.

    Raises:
        RequestError: not a string, not ISO-8601, or without a time zone.
    """
    if not isinstance(value, str):
        raise RequestError("validate", f"event_time must be an ISO-8601 string, got "
                                       f"{type(value).__name__}")
    try:
        parsed = datetime.datetime.fromisoformat(value)
    except ValueError:
        raise RequestError("validate", f"event_time {value!r} is not ISO-8601") from None
    if parsed.tzinfo is None:
        raise RequestError("validate", f"event_time {value!r} has no time zone")
    return parsed.astimezone(datetime.UTC)


def validate_field(field: Field, value):
    """One applicant field, checked and normalised (numbers -> float).

    Raises:
        RequestError: wrong type, non-finite or out-of-range number, empty or overlong code,
            or a missing value the data set does not allow.
    """
    name = field.name
    if value is None:
        if field.may_be_missing:
            return None
        raise RequestError("validate", f"{name} may not be null")
    if field.kind == NUMERIC:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise RequestError("validate", f"{name} must be a number, got "
                                           f"{type(value).__name__} {value!r}")
        number = float(value)
        if not math.isfinite(number):
            raise RequestError("validate", f"{name} must be finite, got {value!r}")
        low, high = field.min_value, field.max_value
        if (low is not None and number < low) or (high is not None and number > high):
            raise RequestError("validate", f"{name}={value!r} is out of range "
                                           f"[{_bound(low, '-inf')}, {_bound(high, 'inf')}]")
        return number
    if not isinstance(value, str):
        raise RequestError("validate", f"{name} must be a category code string, got "
                                       f"{type(value).__name__} {value!r}")
    if not value.strip() or len(value) > field.max_code_length:
        raise RequestError("validate", f"{name}={value!r} is not a category code "
                                       f"(1..{field.max_code_length} characters)")
    return value


def _bound(value, infinite: str) -> str:
    return infinite if value is None else f"{value:g}"


def decode_line(line: bytes) -> str:
    """UTF-8 bytes -> text.

    Raises:
        RequestError: the bytes are not valid UTF-8.
    """
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError as error:
        raise RequestError("parse", f"not UTF-8 text: {error}") from None


def parse_request(line: str, origin: str, received_at: datetime.datetime,
                  fields: tuple[Field, ...],
                  max_bytes: int = DEFAULT_MAX_REQUEST_BYTES) -> CreditRequest:
    """One JSON line -> a validated CreditRequest.

    Args:
        line: the request text.
        origin: where it came from.
        received_at: when it was read.
        fields: the served data set's fields (``Dataset.fields``).
        max_bytes: longer lines are rejected.

    Raises:
        RequestError: with stage "parse" (oversized, empty, not JSON, not an object) or
            "validate" (missing / unexpected fields, bad id, time or field values).
    """
    size = len(line.encode("utf-8", errors="replace"))
    if size > max_bytes:
        raise RequestError("parse", f"request of {size} bytes exceeds the limit of "
                                    f"{max_bytes} bytes")
    if not line.strip():
        raise RequestError("parse", "empty line")
    try:
        body = json.loads(line)
    except json.JSONDecodeError as error:
        raise RequestError("parse", f"malformed JSON: {error}") from None
    if not isinstance(body, dict):
        raise RequestError("parse", f"a request must be a JSON object, got "
                                    f"{type(body).__name__}")
    names = [f.name for f in fields]
    missing = [n for n in ID_FIELDS if n not in body] + [
        f.name for f in fields if f.name not in body and not f.may_be_missing]
    if missing:
        raise RequestError("validate", f"missing fields: {', '.join(missing)}")
    extra = sorted(set(body) - set(ID_FIELDS) - set(names))
    if extra:
        raise RequestError("validate", f"unexpected fields: {', '.join(extra)}")
    request_id = body["request_id"]
    if not isinstance(request_id, str) or not request_id.strip() or \
            len(request_id) > MAX_REQUEST_ID_LENGTH:
        raise RequestError("validate", f"request_id must be a non-empty string of at most "
                                       f"{MAX_REQUEST_ID_LENGTH} characters, got {request_id!r}")
    return CreditRequest(
        request_id=request_id,
        event_time=parse_event_time(body["event_time"]),
        received_at=received_at,
        fields={f.name: validate_field(f, body.get(f.name)) for f in fields},
        origin=origin,
    )


class ParseRequestsFn(beam.DoFn):
    """(origin, line) -> CreditRequest, or a dead letter on the ``dead_letters`` output."""

    def __init__(self, pipeline_name: str, run_id: str, max_bytes: int,
                 fields: tuple[Field, ...]):
        self._pipeline_name = pipeline_name
        self._run_id = run_id
        self._max_bytes = max_bytes
        self._fields = tuple(fields)

    def process(self, element):
        origin, line = element
        now = datetime.datetime.now(datetime.UTC)
        try:
            if isinstance(line, bytes):
                line = decode_line(line)
            yield parse_request(line, origin, now, self._fields, self._max_bytes)
        except RequestError as error:
            raw = line.decode("utf-8", "backslashreplace") if isinstance(line, bytes) else line
            yield beam.pvalue.TaggedOutput(DEAD_LETTERS, dead_letter(
                pipeline=self._pipeline_name, stage=error.stage, error=error, raw=raw,
                origin=origin, run_id=self._run_id, failed_at=now))
