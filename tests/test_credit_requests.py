import datetime
import json

import pytest

from tests.conftest import german_dataset
from transforms.credit.requests import RequestError, decode_line, parse_request

FIELDS = german_dataset().fields
FIELD_NAMES = german_dataset().field_names

NOW = datetime.datetime(2026, 11, 27, tzinfo=datetime.UTC)


@pytest.fixture
def good(make_requests):
    return make_requests(1)[0]


def _line(request: dict, **changes) -> str:
    body = dict(request, **changes)
    return json.dumps({k: v for k, v in body.items() if v is not ...})


def test_valid_request_is_normalised(good):
    request = parse_request(json.dumps(good), "f.jsonl:1", NOW, FIELDS)
    assert request.request_id == good["request_id"]
    assert request.event_time.tzinfo == datetime.UTC
    assert set(request.fields) == set(FIELD_NAMES)
    assert isinstance(request.fields["duration_months"], float)
    assert request.fields["checking_status"] == good["checking_status"]
    assert request.origin == "f.jsonl:1" and request.received_at == NOW


def test_unknown_category_code_is_accepted_for_the_oov_bucket(good):
    request = parse_request(_line(good, purpose="A499"), "o", NOW, FIELDS)
    assert request.fields["purpose"] == "A499"


def test_event_time_offsets_are_converted_to_utc(good):
    line = _line(good, event_time="2026-11-01T02:00:00+02:00")
    request = parse_request(line, "o", NOW, FIELDS)
    assert request.event_time == datetime.datetime(2026, 11, 1, tzinfo=datetime.UTC)


@pytest.mark.parametrize("changes, stage, message", [
    ({"credit_amount": "1000"}, "validate", "credit_amount must be a number, got str"),
    ({"credit_amount": True}, "validate", "credit_amount must be a number, got bool"),
    ({"age_years": 12}, "validate", r"age_years=12 is out of range \[18, 120\]"),
    ({"duration_months": -3}, "validate", "duration_months=-3 is out of range"),
    ({"checking_status": 11}, "validate", "checking_status must be a category code string"),
    ({"checking_status": ""}, "validate", "is not a category code"),
    ({"checking_status": "A" * 40}, "validate", "is not a category code"),
    ({"housing": ...}, "validate", "missing fields: housing"),
    ({"favourite_colour": "blue"}, "validate", "unexpected fields: favourite_colour"),
    ({"request_id": ""}, "validate", "request_id must be a non-empty string"),
    ({"request_id": 17}, "validate", "request_id must be a non-empty string"),
    ({"event_time": "yesterday"}, "validate",
     r"event_time \(a string of 9 characters\) is not ISO-8601"),
    ({"event_time": "2026-11-01T00:00:00"}, "validate", "has no time zone"),
])
def test_bad_fields_are_rejected_with_a_clear_message(good, changes, stage, message):
    with pytest.raises(RequestError, match=message) as error:
        parse_request(_line(good, **changes), "o", NOW, FIELDS)
    assert error.value.stage == stage


@pytest.mark.parametrize("event_time, message", [
    ("0001-01-01T00:00:00+00:00", "event_time 0001-01-01T00:00:00[+]00:00 is before "
                                  "1990-01-01T00:00:00[+]00:00, the earliest this run accepts"),
    ("9999-12-31T00:00:00+00:00", r"event_time 9999-12-31T00:00:00\+00:00 is more than 24 h "
                                  r"after the request was received \(2026-11-27T00:00:00"),
    ("2026-11-28T00:00:01+00:00", "is more than 24 h after"),
])
def test_an_implausible_event_time_is_refused_in_words_line_and_batch(
        good, event_time, message):
    from transforms.credit.requests import parse_requests, request_batch_schema

    line = _line(good, event_time=event_time)
    with pytest.raises(RequestError, match=message) as error:
        parse_request(line, "o", NOW, FIELDS)
    assert error.value.stage == "validate"
    batch, failed = parse_requests([("o", line), ("p", json.dumps(good))], NOW, FIELDS,
                                   request_batch_schema(FIELDS))
    assert batch.num_rows == 1 and [(o, str(e)) for o, _, e in failed] == [
        ("o", str(error.value))]


def test_a_backfill_widens_the_window_by_its_option(good):
    from models.credit.event_times import EventTimeWindow, earliest_event_time

    line = _line(good, event_time="1985-03-01T00:00:00+00:00")
    with pytest.raises(RequestError, match="before 1990-01-01"):
        parse_request(line, "o", NOW, FIELDS)
    wider = EventTimeWindow(earliest=earliest_event_time("1980-01-01"))
    assert parse_request(line, "o", NOW, FIELDS, window=wider).event_time.year == 1985
    with pytest.raises(ValueError, match="--earliest_event_time 'last year' is not an ISO"):
        earliest_event_time("last year")
    # Exactly a day ahead is still accepted (a client clock running fast).
    parse_request(_line(good, event_time="2026-11-28T00:00:00+00:00"), "o", NOW, FIELDS)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_numbers_are_rejected(good, value):
    # json.dumps writes NaN / Infinity, and json.loads accepts them.
    with pytest.raises(RequestError, match="credit_amount must be finite"):
        parse_request(_line(good, credit_amount=value), "o", NOW, FIELDS)


@pytest.mark.parametrize("line, message", [
    ("{not json", "malformed JSON"),
    ("[1, 2]", "must be a JSON object, got list"),
    ("   ", "empty line"),
    ('"just a string"', "must be a JSON object, got str"),
])
def test_unparsable_lines_are_rejected_at_parse(line, message):
    with pytest.raises(RequestError, match=message) as error:
        parse_request(line, "o", NOW, FIELDS)
    assert error.value.stage == "parse"


def test_oversized_lines_are_rejected_before_parsing(good):
    line = _line(good, request_id="x" * 5000)
    with pytest.raises(RequestError, match=r"request of \d+ bytes exceeds the limit of 1024"):
        parse_request(line, "o", NOW, FIELDS, max_bytes=1024)


def test_invalid_utf8_is_a_parse_error():
    with pytest.raises(RequestError, match="not UTF-8") as error:
        decode_line(b'{"request_id": "\xff\xfe"}')
    assert error.value.stage == "parse"


def test_parse_dofn_emits_one_batch_of_requests_and_tags_dead_letters(good):
    from apache_beam.pvalue import TaggedOutput

    from transforms.credit.dofns import ParseRequestBatchFn

    fn = ParseRequestBatchFn("credit_scoring", "run-1", 4096, FIELDS)
    second = dict(good, request_id="req-2", credit_amount=1234.5)
    lines = [("f:1", json.dumps(good).encode()), ("f:2", b"\xff not utf-8"),
             ("f:3", json.dumps(second))]
    tagged, batch = list(fn.process(lines))
    assert batch.num_rows == 2
    rows = batch.to_pylist()
    assert [r["request_id"] for r in rows] == [good["request_id"], "req-2"]
    assert [r["origin"] for r in rows] == ["f:1", "f:3"]
    assert rows[0]["duration_months"] == float(good["duration_months"])
    assert rows[1]["credit_amount"] == 1234.5
    assert rows[0]["event_time"].isoformat() == "2026-11-01T00:00:00+00:00"
    assert batch.schema.names[:4] == ["request_id", "event_time", "received_at", "origin"]
    assert batch.schema.names[4:] == [f.name for f in FIELDS]
    assert isinstance(tagged, TaggedOutput) and tagged.tag == "dead_letters"
    letter = tagged.value
    assert (letter["stage"], letter["error_class"], letter["origin"]) == \
        ("parse", "RequestError", "f:2")
    assert letter["raw"] == "\\xff not utf-8" and letter["run_id"] == "run-1"
    assert letter["message"].startswith("not UTF-8 text")


def _crx_fields():
    from models.credit.dataset import load_dataset

    return load_dataset("credit_crx").fields


CRX_REQUEST = {"request_id": "crx-1", "event_time": "2026-11-01T00:00:00+00:00", "A1": "b",
               "A2": 30.83, "A3": 0, "A4": "u", "A5": "g", "A6": "w", "A7": "v", "A8": 1.25,
               "A9": "t", "A10": "t", "A11": 1, "A12": "f", "A13": "g", "A14": 202, "A15": 0}


def test_a_field_the_data_set_lets_be_missing_may_be_null_or_absent():
    fields = _crx_fields()
    with_null = parse_request(json.dumps(dict(CRX_REQUEST, A1=None, A2=None)), "o", NOW, fields)
    assert with_null.fields["A1"] is None and with_null.fields["A2"] is None
    absent = {k: v for k, v in CRX_REQUEST.items() if k != "A14"}
    assert parse_request(json.dumps(absent), "o", NOW, fields).fields["A14"] is None
    assert parse_request(json.dumps(CRX_REQUEST), "o", NOW, fields).fields["A14"] == 202.0


def test_a_field_the_data_set_requires_may_not_be_null_or_absent():
    fields = _crx_fields()
    with pytest.raises(RequestError, match="A9 may not be null"):
        parse_request(json.dumps(dict(CRX_REQUEST, A9=None)), "o", NOW, fields)
    absent = {k: v for k, v in CRX_REQUEST.items() if k != "A15"}
    with pytest.raises(RequestError, match="missing fields: A15"):
        parse_request(json.dumps(absent), "o", NOW, fields)
    with pytest.raises(RequestError, match="unexpected fields: credit_amount"):
        parse_request(json.dumps(dict(CRX_REQUEST, credit_amount=5)), "o", NOW, fields)


def _hostile(good: dict) -> dict:
    """Lines that once failed a whole job or were taken silently, with the verdict due."""
    text = json.dumps(good)
    return {
        "nested 5,000 levels": ('{"a":' * 5000 + "1" + "}" * 5000,
                                ("parse", "JSON nested too deeply")),
        "duplicate key": (text[:-1] + ', "duration_months": 48}',
                          ("parse", "duplicate key 'duration_months'")),
        "byte-order mark": ("\ufeff" + text, "ok"),
        "control character in id": (json.dumps(dict(good, request_id="a\u0007b")),
                                    ("validate", "contains control characters")),
        "integer of 400 digits": (text.replace('"duration_months": 6', '"duration_months": 1'
                                               + "0" * 400),
                                  ("validate", "duration_months is out of range")),
        "integer of 5,000 digits": (text.replace('"duration_months": 6', '"duration_months": 1'
                                                 + "0" * 5000),
                                    ("parse", "malformed JSON")),
    }


def test_hostile_lines_get_a_verdict_in_words_one_by_one_and_in_a_batch(good):
    from transforms.credit.requests import parse_requests, request_batch_schema

    assert good["duration_months"] == 6
    cases = _hostile(good)
    lines = [(name, text) for name, (text, _) in cases.items()]
    batch, failed = parse_requests(lines, NOW, FIELDS, request_batch_schema(FIELDS),
                                   max_bytes=1 << 20)
    in_batch = {origin: (error.stage, str(error)) for origin, _, error in failed}
    in_batch.update({r["origin"]: "ok" for r in batch.to_pylist()})
    for name, (text, verdict) in cases.items():
        try:
            parse_request(text, name, NOW, FIELDS, max_bytes=1 << 20)
            alone = "ok"
        except RequestError as error:
            alone = (error.stage, str(error))
        assert alone == in_batch[name], name
        if verdict == "ok":
            assert alone == "ok", name
        else:
            assert alone[0] == verdict[0] and verdict[1] in alone[1], (name, alone)
