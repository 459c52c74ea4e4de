import datetime
import json

import pytest

from models.credit.schema import FIELD_NAMES
from transforms.credit_requests import RequestError, decode_line, parse_request

NOW = datetime.datetime(2026, 11, 27, tzinfo=datetime.UTC)


@pytest.fixture
def good(make_requests):
    return make_requests(1)[0]


def _line(request: dict, **changes) -> str:
    body = dict(request, **changes)
    return json.dumps({k: v for k, v in body.items() if v is not ...})


def test_valid_request_is_normalised(good):
    request = parse_request(json.dumps(good), "f.jsonl:1", NOW)
    assert request.request_id == good["request_id"]
    assert request.event_time.tzinfo == datetime.UTC
    assert set(request.fields) == set(FIELD_NAMES)
    assert isinstance(request.fields["duration_months"], float)
    assert request.fields["checking_status"] == good["checking_status"]
    assert request.origin == "f.jsonl:1" and request.received_at == NOW


def test_unknown_category_code_is_accepted_for_the_oov_bucket(good):
    request = parse_request(_line(good, purpose="A499"), "o", NOW)
    assert request.fields["purpose"] == "A499"


def test_event_time_offsets_are_converted_to_utc(good):
    request = parse_request(_line(good, event_time="2026-11-01T02:00:00+02:00"), "o", NOW)
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
    ({"event_time": "yesterday"}, "validate", "event_time 'yesterday' is not ISO-8601"),
    ({"event_time": "2026-11-01T00:00:00"}, "validate", "has no time zone"),
])
def test_bad_fields_are_rejected_with_a_clear_message(good, changes, stage, message):
    with pytest.raises(RequestError, match=message) as error:
        parse_request(_line(good, **changes), "o", NOW)
    assert error.value.stage == stage


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_numbers_are_rejected(good, value):
    # json.dumps writes NaN / Infinity, and json.loads accepts them.
    with pytest.raises(RequestError, match="credit_amount must be finite"):
        parse_request(_line(good, credit_amount=value), "o", NOW)


@pytest.mark.parametrize("line, message", [
    ("{not json", "malformed JSON"),
    ("[1, 2]", "must be a JSON object, got list"),
    ("   ", "empty line"),
    ('"just a string"', "must be a JSON object, got str"),
])
def test_unparsable_lines_are_rejected_at_parse(line, message):
    with pytest.raises(RequestError, match=message) as error:
        parse_request(line, "o", NOW)
    assert error.value.stage == "parse"


def test_oversized_lines_are_rejected_before_parsing(good):
    line = _line(good, request_id="x" * 5000)
    with pytest.raises(RequestError, match=r"request of \d+ bytes exceeds the limit of 1024"):
        parse_request(line, "o", NOW, max_bytes=1024)


def test_invalid_utf8_is_a_parse_error():
    with pytest.raises(RequestError, match="not UTF-8") as error:
        decode_line(b'{"request_id": "\xff\xfe"}')
    assert error.value.stage == "parse"


def test_parse_dofn_emits_requests_and_tags_dead_letters(good):
    from apache_beam.pvalue import TaggedOutput

    from transforms.credit_requests import ParseRequestsFn

    fn = ParseRequestsFn("credit_scoring", "run-1", max_bytes=4096)
    [request] = list(fn.process(("f:1", json.dumps(good).encode())))
    assert request.request_id == good["request_id"] and request.origin == "f:1"
    [tagged] = list(fn.process(("f:2", b"\xff not utf-8")))
    assert isinstance(tagged, TaggedOutput) and tagged.tag == "dead_letters"
    letter = tagged.value
    assert (letter["stage"], letter["error_class"], letter["origin"]) == \
        ("parse", "RequestError", "f:2")
    assert letter["raw"] == "\\xff not utf-8" and letter["run_id"] == "run-1"
    assert letter["message"].startswith("not UTF-8 text")
