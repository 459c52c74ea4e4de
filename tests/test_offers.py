"""The offer client against the real stand-in service on a loopback port."""

import pytest
import requests
from apache_beam.io.requestresponse import UserCodeQuotaException, UserCodeTimeoutException

from services.bank_offers import is_poisoned, monthly_payment, quote
from transforms.credit.offers import (
    FAILED,
    OFFERED,
    DeadLetteringRepeater,
    OfferCaller,
    ServiceUnavailable,
)

QUOTE_FIELDS = {"amount": "credit_amount", "duration_months": "duration_months"}


def _rows(n, bank="alpenbank", prefix="r"):
    return [{"prediction_id": f"{prefix}-{i}", "bank": bank, "score": 0.96,
             "credit_amount": 5000.0, "duration_months": 24.0} for i in range(n)]


def test_annuity_payment():
    # 10,000 at 12% APR over 12 months: the textbook 888.49 per month.
    assert monthly_payment(10000, 12.0, 12) == pytest.approx(888.49, abs=0.01)
    assert monthly_payment(1200, 0.0, 12) == pytest.approx(100.0)


def test_quote_prices_by_bank_and_score_band():
    best = quote({"request_id": "a", "bank": "alpenbank", "score": 0.97, "amount": 1000,
                  "duration_months": 12}, 0.0)
    worse = quote({"request_id": "a", "bank": "alpenbank", "score": 0.86, "amount": 1000,
                   "duration_months": 12}, 0.0)
    assert best["status"] == worse["status"] == "ok"
    assert best["apr"] == 4.9 and worse["apr"] == 6.9
    unknown = quote({"request_id": "a", "bank": "nobank", "score": 0.9, "amount": 1,
                     "duration_months": 1}, 0.0)
    assert unknown == {"request_id": "a", "status": "rejected", "reason": "unknown bank 'nobank'"}


def test_caller_gets_one_offer_per_request(offer_service):
    service = offer_service()
    with OfferCaller(service.url, QUOTE_FIELDS) as caller:
        answered = caller(_rows(3))
    assert [r["offer_status"] for r in answered] == [OFFERED] * 3
    assert [r["prediction_id"] for r in answered] == ["r-0", "r-1", "r-2"]
    assert all(r["offer_apr"] == 4.9 and r["offer_id"] for r in answered)
    assert service.stats() == {"calls": 1, "quotes": 3, "quotes_created": 3,
                               "max_calls_per_quote": 1}


def test_caller_maps_http_failures_to_beam_exceptions(offer_service):
    with OfferCaller(offer_service(fail_rate=1.0, fail_kinds=("429",)).url, QUOTE_FIELDS) as caller:
        with pytest.raises(UserCodeQuotaException, match="429"):
            caller(_rows(1))
    with OfferCaller(offer_service(fail_rate=1.0, fail_kinds=("500",)).url, QUOTE_FIELDS) as caller:
        with pytest.raises(ServiceUnavailable, match="500"):
            caller(_rows(1))
    hanging = offer_service(fail_rate=1.0, fail_kinds=("timeout",), hang_secs=1.0)
    with OfferCaller(hanging.url, QUOTE_FIELDS, timeout_secs=0.2) as caller:
        with pytest.raises(UserCodeTimeoutException, match="within 0.2s"):
            caller(_rows(1))


@pytest.mark.parametrize("kind, message", [
    ("not_json", "offer API answered 200 with content type 'text/html', not application/json"),
    ("wrong_content_type",
     "offer API answered 200 with content type 'text/plain', not application/json"),
    ("cut_short", "offer API answer broken off at .*: ChunkedEncodingError"),
])
def test_answers_that_are_not_the_apis_json_are_transient_failures(offer_service, kind,
                                                                    message):
    service = offer_service(fail_rate=1.0, fail_kinds=(kind,))
    with OfferCaller(service.url, QUOTE_FIELDS) as caller:
        with pytest.raises(ServiceUnavailable, match=message):
            caller(_rows(2))
    # The bank priced the quotes before the answer was spoiled; retries replay them.
    assert service.stats()["quotes_created"] == 2


def test_a_slow_answer_within_the_timeout_is_an_offer(offer_service):
    service = offer_service(fail_rate=1.0, fail_kinds=("slow",), hang_secs=0.2)
    with OfferCaller(service.url, QUOTE_FIELDS, timeout_secs=2.0) as caller:
        assert [r["offer_status"] for r in caller(_rows(2))] == [OFFERED] * 2


def test_the_stand_in_refuses_unknown_fault_kinds(capsys):
    from services.bank_offers import main

    with pytest.raises(SystemExit):
        main(["--fail_kinds", "500,meteor"])
    assert "unknown --fail_kinds meteor; known: 500, 429, timeout, slow" in capsys.readouterr().err


def test_unreachable_service_is_a_transient_failure():
    with OfferCaller("http://127.0.0.1:9", QUOTE_FIELDS, timeout_secs=0.5) as caller:
        with pytest.raises(ServiceUnavailable, match="unreachable"):
            caller(_rows(1))


def test_repeater_retries_then_returns_failures_instead_of_raising(offer_service):
    service = offer_service(fail_rate=1.0, fail_kinds=("500",))
    repeater = DeadLetteringRepeater(max_retries=2, initial_delay_secs=0.01)
    with OfferCaller(service.url, QUOTE_FIELDS) as caller:
        outcome = repeater.repeat(caller, _rows(2), timeout=1.0)
    assert service.stats()["calls"] == 3  # first attempt + 2 retries
    assert [r["offer_status"] for r in outcome] == [FAILED, FAILED]
    assert outcome[0]["offer_error_class"] == "ServiceUnavailable"
    assert "after 3 attempts" in outcome[0]["offer_error"]


def test_repeater_recovers_from_transient_failures(offer_service):
    # A seeded fault stream: about half the calls fail; the retries get through.
    service = offer_service(fail_rate=0.5, fail_kinds=("429", "500"), seed=3)
    repeater = DeadLetteringRepeater(max_retries=8, initial_delay_secs=0.01,
                                     max_delay_secs=0.05)
    with OfferCaller(service.url, QUOTE_FIELDS) as caller:
        outcomes = [repeater.repeat(caller, _rows(1, prefix=f"t{i}"), timeout=1.0)[0]
                    for i in range(20)]
    stats = service.stats()
    assert stats["calls"] > 20  # some calls were retried ...
    assert all(o["offer_status"] == OFFERED for o in outcomes)  # ... and all succeeded


def test_bank_rejection_is_final_and_not_retried(offer_service):
    rows = _rows(40)
    poisoned = {r["prediction_id"] for r in rows if is_poisoned(r["prediction_id"], 0.3)}
    assert poisoned, "the fraction should poison a few of 40 ids"
    service = offer_service(poison_fraction=0.3)
    repeater = DeadLetteringRepeater(max_retries=3, initial_delay_secs=0.01)
    with OfferCaller(service.url, QUOTE_FIELDS, batch_size=40) as caller:
        outcome = repeater.repeat(caller, rows, timeout=1.0)
    failed = {r["prediction_id"] for r in outcome if r["offer_status"] == FAILED}
    assert failed == poisoned
    assert service.stats()["calls"] == 1
    assert all(r["offer_error_class"] == "OfferRejected" for r in outcome
               if r["offer_status"] == FAILED)


def test_service_health_and_unknown_paths(offer_service):
    service = offer_service()
    assert requests.get(service.url + "/healthz", timeout=2).json() == {"status": "ok"}
    assert requests.get(service.url + "/nope", timeout=2).status_code == 404
    assert requests.post(service.url + "/v1/quotes", data=b"{}", timeout=2).status_code == 400


def test_a_quote_without_amount_or_duration_gets_a_rate_and_no_payment(offer_service):
    service = offer_service()
    rows = [{"prediction_id": "crx-0", "bank": "alpenbank", "score": 0.96, "A15": 0.0}]
    with OfferCaller(service.url, {}) as caller:
        [answered] = caller(rows)
    assert answered["offer_status"] == OFFERED and answered["offer_apr"] == 4.9
    assert answered["offer_monthly_payment"] is None
