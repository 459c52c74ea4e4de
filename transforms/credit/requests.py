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
import itertools
import json
import math
import re

import numpy as np
import pyarrow as pa

from models.credit.dataset import NUMERIC, Field
from models.credit.event_times import DEFAULT_WINDOW, EventTimeWindow
from transforms.common.predictions import TIMESTAMP

ID_FIELDS = ("request_id", "event_time")
MAX_REQUEST_ID_LENGTH = 128
# C0 controls and DEL: an id with them breaks logs, CSV exports and terminals downstream.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
DEFAULT_MAX_REQUEST_BYTES = 64 * 1024


class RequestError(ValueError):
    """A request that cannot be scored; ``stage`` is "parse" or "validate"."""

    def __init__(self, stage: str, message: str, field: str | None = None):
        super().__init__(message)
        self.stage = stage
        self.field = field  # the field whose value did not fit (its value is never quoted)


@dataclasses.dataclass(frozen=True)
class CreditRequest:
    """A validated request.

    Attributes:
        request_id: the caller's id; also the prediction id.
        event_time: when the client asked (UTC).
        received_at: when the pipeline read it (UTC); latency is measured from here.
        fields: the applicant fields, numbers as float, codes as str, missing as None.
        origin: where it came from (file and line, topic).
        pseudonyms: pseudonymised pass-through fields (dropped ones are not kept at all).
    """

    request_id: str
    event_time: datetime.datetime
    received_at: datetime.datetime
    fields: dict
    origin: str
    pseudonyms: dict = dataclasses.field(default_factory=dict)


def shown(value) -> str:
    """A value as an error message quotes it: its repr, cut after 40 characters (a message
    stays readable whatever a client sent; the dead letter keeps the raw line)."""
    text = repr(value)
    if len(text) <= 40:
        return text
    size = len(value) if isinstance(value, (str, list, dict)) else len(text)
    return f"{text[:32]}... ({size:,} {'characters' if isinstance(value, str) else 'long'})"


def misfit(value) -> str:
    """A value that does not fit its field, as a message describes it without quoting it: a
    name typed into event_time or a code field must not travel on in a 400 body, a log or a
    dead letter's message. Numbers are quoted (a number is no name); text is not."""
    if isinstance(value, str):
        return f"a string of {len(value)} characters"
    if isinstance(value, bool) or value is None or isinstance(value, (int, float)):
        return shown(value)
    if isinstance(value, list):
        return f"a list of {len(value)}"
    if isinstance(value, dict):
        return f"an object of {len(value)} keys"
    return type(value).__name__


def _listed(names) -> str:
    names = sorted(names)
    return ", ".join(shown(n)[1:-1] if len(n) > 40 else n for n in names[:10]) + (
        f" and {len(names) - 10} more" if len(names) > 10 else "")




def check_window(event_time: datetime.datetime, received_at: datetime.datetime,
                 window: EventTimeWindow) -> datetime.datetime:
    problem = window.problem(event_time, received_at)
    if problem:
        raise RequestError("validate", problem)
    return event_time


def parse_event_time(value) -> datetime.datetime:
    """ISO-8601 timestamp with a zone -> aware UTC datetime.

    Raises:
        RequestError: not a string, not ISO-8601, or without a time zone.
    """
    if not isinstance(value, str):
        raise RequestError("validate", f"event_time must be an ISO-8601 string, got "
                                       f"{type(value).__name__}", "event_time")
    try:
        parsed = datetime.datetime.fromisoformat(value)
    except ValueError:
        raise RequestError("validate", f"event_time ({misfit(value)}) is not ISO-8601",
                           "event_time") from None
    if parsed.tzinfo is None:
        raise RequestError("validate", f"event_time {value} has no time zone")  # a timestamp
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
                                           f"{type(value).__name__} ({misfit(value)})", name)
        try:
            number = float(value)
        except OverflowError:  # an integer beyond any float
            raise RequestError("validate", f"{name} is out of range (an integer of "
                                           f"{len(str(value))} digits)") from None
        if not math.isfinite(number):
            raise RequestError("validate", f"{name} must be finite, got {shown(value)}")
        low, high = field.min_value, field.max_value
        if (low is not None and number < low) or (high is not None and number > high):
            raise RequestError("validate", f"{name}={shown(value)} is out of range "
                                           f"[{_bound(low, '-inf')}, {_bound(high, 'inf')}]")
        return number
    if not isinstance(value, str):
        raise RequestError("validate", f"{name} must be a category code string, got "
                                       f"{type(value).__name__} ({misfit(value)})", name)
    if not value.strip() or len(value) > field.max_code_length:
        raise RequestError("validate", f"{name} ({misfit(value)}) is not a category code "
                                       f"(1..{field.max_code_length} characters)", name)
    return value


def _bound(value, infinite: str) -> str:
    return infinite if value is None else f"{value:g}"


def _unique_keys(pairs: list[tuple]) -> dict:
    """``object_pairs_hook`` refusing a key given twice (JSON itself lets the last win)."""
    body = dict(pairs)
    if len(body) != len(pairs):
        seen: set = set()
        twice = next(k for k, _ in pairs if k in seen or seen.add(k))
        raise RequestError("parse", f"duplicate key {twice!r}: which value was meant is unknown")
    return body


# One decoder for every line: json.loads with a hook builds a new decoder per call.
_DECODER = json.JSONDecoder(object_pairs_hook=_unique_keys)


def load_json(text: str):
    """Strict JSON: a UTF-8 byte-order mark is skipped; duplicate keys, nesting too deep for
    the decoder and integers too long to convert are refused in words.

    Raises:
        RequestError: stage "parse".
    """
    if text.startswith("\ufeff"):
        text = text[1:]
    try:
        return _DECODER.decode(text)
    except RecursionError:
        raise RequestError("parse", "JSON nested too deeply (a request is one flat object)"
                           ) from None
    except json.JSONDecodeError as error:
        raise RequestError("parse", f"malformed JSON: {error}") from None
    except ValueError as error:  # e.g. an integer of more than 4,300 digits
        raise RequestError("parse", f"malformed JSON: {error}") from None


def decode_line(line: bytes) -> str:
    """UTF-8 bytes -> text.

    Raises:
        RequestError: the bytes are not valid UTF-8.
    """
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError as error:
        raise RequestError("parse", f"not UTF-8 text: {error}") from None


def _key_sets(fields: tuple[Field, ...], pass_through=()) -> tuple[frozenset, frozenset]:
    """(keys a request must have, keys it may have) for a data set's fields and its
    pass-through fields (optional in every request)."""
    required = frozenset(ID_FIELDS) | {f.name for f in fields if not f.may_be_missing}
    return required, frozenset(ID_FIELDS) | {f.name for f in fields} | set(pass_through)


def parse_envelope(line: str, fields: tuple[Field, ...],
                   max_bytes: int = DEFAULT_MAX_REQUEST_BYTES, key_sets: tuple | None = None
                   ) -> tuple[dict, str, datetime.datetime]:
    """One JSON line -> (body, request id, event time), its fields not yet validated.

    ``key_sets`` is ``_key_sets(fields)``, computed once by callers that parse many lines.

    Raises:
        RequestError: with stage "parse" (oversized, empty, not JSON, not an object) or
            "validate" (missing / unexpected fields, bad id or time).
    """
    size = len(line.encode("utf-8", errors="replace"))
    if size > max_bytes:
        raise RequestError("parse", f"request of {size} bytes exceeds the limit of "
                                    f"{max_bytes} bytes")
    if not line.strip():
        raise RequestError("parse", "empty line")
    body = load_json(line)
    if not isinstance(body, dict):
        raise RequestError("parse", f"a request must be a JSON object, got "
                                    f"{type(body).__name__}")
    required, allowed = key_sets or _key_sets(fields)
    keys = body.keys()
    if not required <= keys:
        missing = [n for n in ID_FIELDS if n not in body] + [
            f.name for f in fields if f.name not in body and not f.may_be_missing]
        raise RequestError("validate", f"missing fields: {', '.join(missing)}")
    if not keys <= allowed:
        raise RequestError("validate", f"unexpected fields: {_listed(keys - allowed)}")
    request_id = body["request_id"]
    if not isinstance(request_id, str) or not request_id.strip() or \
            len(request_id) > MAX_REQUEST_ID_LENGTH:
        raise RequestError("validate", f"request_id must be a non-empty string of at most "
                                       f"{MAX_REQUEST_ID_LENGTH} characters, got "
                                       f"{misfit(request_id)}", "request_id")
    if _CONTROL.search(request_id):
        raise RequestError("validate", f"request_id ({misfit(request_id)}) contains control "
                                       f"characters", "request_id")
    return body, request_id, parse_event_time(body["event_time"])


def parse_request(line: str, origin: str, received_at: datetime.datetime,
                  fields: tuple[Field, ...],
                  max_bytes: int = DEFAULT_MAX_REQUEST_BYTES, privacy=None,
                  window: EventTimeWindow = DEFAULT_WINDOW) -> CreditRequest:
    """One JSON line -> a validated CreditRequest.

    Args:
        line: the request text.
        origin: where it came from.
        received_at: when it was read.
        fields: the served data set's fields (``Dataset.fields``).
        max_bytes: longer lines are rejected.
        privacy: the data set's ``transforms.credit.privacy.Privacy`` (with its key) when it
            declares pass-through fields; None otherwise.
        window: the event times accepted (``EventTimeWindow``).

    Raises:
        RequestError: with stage "parse" (oversized, empty, not JSON, not an object) or
            "validate" (missing / unexpected fields, bad id, time or field values).
    """
    treatments = privacy.treatments if privacy else {}
    body, request_id, event_time = parse_envelope(line, fields, max_bytes,
                                                  _key_sets(fields, treatments))
    check_window(event_time, received_at, window)
    if privacy:
        privacy.check_values(body)
    return CreditRequest(
        request_id=request_id,
        event_time=event_time,
        received_at=received_at,
        fields={f.name: validate_field(f, body.get(f.name)) for f in fields},
        origin=origin,
        pseudonyms={n: privacy.pseudonym(body.get(n)) for n in privacy.pseudonymised}
        if privacy else {},
    )


def _column_looks_valid(field: Field, values: list) -> np.ndarray | None:
    """Fast check of one field over many requests: a mask of the values that pass, or None
    when the column has a value of an unexpected type (then every value is checked by
    ``validate_field``). Agrees with ``validate_field``: True only where it would pass."""
    types = set(map(type, values))
    has_none = type(None) in types
    present = (np.fromiter((v is not None for v in values), dtype=bool, count=len(values))
               if has_none else np.ones(len(values), dtype=bool))
    if field.kind == NUMERIC:
        if not types <= {int, float, type(None)}:
            return None
        try:
            numbers = np.array(values, dtype=np.float64)  # None -> NaN
        except OverflowError:
            return None
        with np.errstate(invalid="ignore"):
            ok = np.isfinite(numbers)
            if field.min_value is not None:
                ok &= numbers >= field.min_value
            if field.max_value is not None:
                ok &= numbers <= field.max_value
    else:
        if not types <= {str, type(None)}:
            return None
        codes = [v for v in values if v is not None] if has_none else values
        longest = field.max_code_length
        if all(map(str.strip, codes)) and max(map(len, codes), default=0) <= longest:
            ok = np.ones(len(values), dtype=bool)
        else:
            ok = np.fromiter((v is None or (len(v) <= longest and bool(v.strip()))
                              for v in values), dtype=bool, count=len(values))
    return np.where(present, ok, field.may_be_missing)


def parse_requests(lines, received_at: datetime.datetime, fields: tuple[Field, ...],
                   schema: pa.Schema, max_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
                   privacy=None, window: EventTimeWindow = DEFAULT_WINDOW
                   ) -> tuple[pa.RecordBatch | None, list[tuple[str, object, RequestError]]]:
    """Many (origin, line) -> (record batch of the valid requests, [(origin, line, error)] of
    the others), with the same verdicts and messages as ``parse_request`` line by line, but
    fields checked a column at a time.

    Args:
        lines: (origin, bytes or text) pairs.
        received_at: when they were read.
        fields: the served data set's fields.
        schema: ``request_batch_schema(fields, privacy.pseudonymised)``.
        max_bytes: longer lines are rejected.
        privacy, window: as ``parse_request``.
    """
    failed, kept = [], []
    key_sets = _key_sets(fields, privacy.treatments if privacy else ())
    for origin, line in lines:
        try:
            text = decode_line(line) if isinstance(line, bytes) else line
            parsed = parse_envelope(text, fields, max_bytes, key_sets)
            check_window(parsed[2], received_at, window)
            if privacy:
                privacy.check_values(parsed[0])
            kept.append((origin, line, *parsed))
        except RequestError as error:
            failed.append((origin, line, error))
    columns, errors = {}, {}
    bodies = [k[2] for k in kept]
    for field in fields:
        values = list(map(dict.get, bodies, itertools.repeat(field.name)))
        fine = _column_looks_valid(field, values)
        suspects = range(len(values)) if fine is None else np.flatnonzero(~fine)
        for i in suspects:
            if i in errors:
                continue  # the request's first bad field is the one reported
            try:
                validate_field(field, values[i])
            except RequestError as error:
                errors[i] = error
        columns[field.name] = values
    for i in sorted(errors):
        failed.append((kept[i][0], kept[i][1], errors[i]))
    good = [i for i in range(len(kept)) if i not in errors]
    if not good:
        return None, failed
    pick = (lambda values: [values[i] for i in good]) if errors else (lambda values: values)
    received = pa.repeat(pa.scalar(received_at, schema.field("received_at").type), len(good))
    arrays = [
        pick([k[3] for k in kept]),
        pick([k[4] for k in kept]),
        received,
        pick([k[0] for k in kept]),
        *(pick(columns[f.name]) for f in fields),
        *(pick([privacy.pseudonym(body.get(name)) for body in bodies])
          for name in (privacy.pseudonymised if privacy else ())),
    ]
    return pa.RecordBatch.from_arrays(
        [a if isinstance(a, pa.Array) else pa.array(a, type=f.type)
         for a, f in zip(arrays, schema)], schema=schema), failed


def request_batch_schema(fields: tuple[Field, ...], pseudonymised=()) -> pa.Schema:
    """Columns of a batch of validated requests: ids, times, origin, then the data set's
    fields (numbers as float64, codes as strings, missing as null), then its pseudonymised
    pass-through fields (strings)."""
    return pa.schema([
        pa.field("request_id", pa.string(), nullable=False),
        pa.field("event_time", TIMESTAMP),
        pa.field("received_at", TIMESTAMP),
        pa.field("origin", pa.string()),
        *(pa.field(f.name, pa.float64() if f.kind == NUMERIC else pa.string())
          for f in fields),
        *(pa.field(name, pa.string()) for name in pseudonymised),
    ])
