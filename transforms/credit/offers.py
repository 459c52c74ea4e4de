"""Asking the chosen bank for its current offer, through Beam's RequestResponseIO.

RequestResponseIO gives the batching of calls (``Caller.batch_elements_kwargs``), the client-side
adaptive throttling (``DefaultThrottler``) and the retry hook (``Repeater``). Its stock repeater
re-raises once retries are exhausted, which would fail the bundle and, on a streaming runner,
retry it forever. ``DeadLetteringRepeater`` keeps the exponential backoff but, when the last
attempt fails, returns a failure outcome per request instead of raising, so the pipeline routes
those requests to dead letters and moves on.

Which failures are retried: timeouts, connection errors, answers cut short, HTTP 429 and 5xx,
and a 200 that is not a JSON answer (a proxy's error page, a wrong content type): all transient,
and safe to retry because of the idempotency keys. A 4xx other than 429 is not retried. A
per-applicant rejection inside a 200 answer is the bank's final word and is not retried either.
Every quote carries an idempotency key derived from the request id and bank, so a retried call
(an answer lost after the bank priced it) gets the first quote back, not a second one.
"""

import hashlib
import logging
import time

import apache_beam as beam
import pyarrow as pa
from apache_beam.io.requestresponse import (
    Caller,
    DefaultThrottler,
    Repeater,
    RequestResponseIO,
    UserCodeExecutionException,
    UserCodeQuotaException,
    UserCodeTimeoutException,
)
from apache_beam.utils.retry import FuzzedExponentialIntervals

LOGGER = logging.getLogger(__name__)
OFFERED, FAILED = "offered", "failed"


class ServiceUnavailable(UserCodeExecutionException):
    """A transient failure of the service (5xx, connection refused or reset): retried."""


class MalformedAnswer(ServiceUnavailable):
    """A 200 that is not the API's JSON answer (an HTML error page of a gateway, another
    content type, a body that does not parse): retried like any transient failure."""


def quote_request(row: dict, fields: dict) -> dict:
    """The part of a scored request that the bank needs to price it.

    Args:
        row: the scored row.
        fields: the offer rules' mapping of quote fields (amount, duration_months, purpose) to
            the data set's fields; only what is mapped is sent.
    """
    return {"request_id": row["prediction_id"], "bank": row["bank"], "score": row["score"],
            "idempotency_key": idempotency_key(row["prediction_id"], row["bank"]),
            **{quote: row.get(name) for quote, name in fields.items()}}


def idempotency_key(request_id: str, bank: str) -> str:
    """The same for every call about one request to one bank (retries, a re-run after a
    crash, the pipeline and the offers API alike), so the bank prices it once."""
    return hashlib.sha256(f"credit_scoring:{bank}:{request_id}".encode()).hexdigest()[:32]


def apply_quote(row: dict, answer: dict) -> dict:
    """Merge one bank answer into the scored row: an offer, or a failure with its reason."""
    if answer.get("status") == "ok":
        return dict(row, offer_status=OFFERED, offer_id=answer["offer_id"],
                    offer_apr=float(answer["apr"]),
                    offer_monthly_payment=(None if answer.get("monthly_payment") is None
                                           else float(answer["monthly_payment"])),
                    offer_rates_version=answer.get("rates_version"), offer_error=None,
                    offer_error_class=None)
    return dict(row, offer_status=FAILED, offer_error_class="OfferRejected",
                offer_error=f"bank answered {answer.get('status')!r}: "
                            f"{answer.get('reason', 'no reason given')}")


def fail_rows(rows: list[dict] | pa.RecordBatch, error: BaseException, attempts: int
              ) -> list[dict] | pa.RecordBatch:
    """Mark every row of a call that could not be completed (dicts, or a record batch)."""
    if isinstance(rows, pa.RecordBatch):
        return pa.RecordBatch.from_pylist(fail_rows(rows.to_pylist(), error, attempts),
                                          schema=rows.schema)
    message = f"{error} (after {attempts} attempt{'s' if attempts > 1 else ''})"
    return [dict(row, offer_status=FAILED, offer_error_class=type(error).__name__,
                 offer_error=message) for row in rows]


class OfferCaller(Caller):
    """Calls ``POST <url>/v1/quotes`` for a batch of scored rows.

    Args:
        url: base URL of the offers API.
        fields: quote field -> data set field (the offer rules' ``fields``).
        timeout_secs: connect and read timeout of one HTTP call.
        batch_size: most quote requests per call.
    """

    def __init__(self, url: str, fields: dict, timeout_secs: float = 2.0, batch_size: int = 50):
        self._url = url.rstrip("/") + "/v1/quotes"
        self._fields = dict(fields)
        self._timeout_secs = timeout_secs
        self._batch_size = batch_size
        self._session = None

    def __enter__(self):
        import requests

        self._session = requests.Session()
        return self

    def __exit__(self, exc_type, exc_val, exc_tb):
        if self._session is not None:
            self._session.close()
            self._session = None

    def batch_elements_kwargs(self):
        return {"min_batch_size": 1, "max_batch_size": self._batch_size}

    def __call__(self, rows: list[dict]) -> list[dict]:
        return self.call(rows, self._timeout_secs)

    def call(self, rows: list[dict], timeout_secs: float) -> list[dict]:
        """One HTTP call for ``rows`` with its own timeout (an interactive caller's remaining
        deadline); raises what ``__call__`` raises."""
        import requests

        if self._session is None:
            self.__enter__()
        try:
            response = self._session.post(
                self._url, json={"quotes": [quote_request(r, self._fields) for r in rows]},
                timeout=timeout_secs)
        except requests.Timeout as error:
            raise UserCodeTimeoutException(
                f"offer API did not answer within {timeout_secs:g}s") from error
        except requests.ConnectionError as error:
            raise ServiceUnavailable(f"offer API unreachable at {self._url}: {error}") from error
        except requests.RequestException as error:  # an answer cut short, a broken encoding
            raise ServiceUnavailable(f"offer API answer broken off at {self._url}: "
                                     f"{type(error).__name__}") from error
        if response.status_code == 429:
            raise UserCodeQuotaException(f"offer API rate limit (429) at {self._url}")
        if response.status_code >= 500:
            raise ServiceUnavailable(f"offer API answered {response.status_code} at {self._url}")
        if response.status_code != 200:
            raise UserCodeExecutionException(
                f"offer API answered {response.status_code}: {response.text[:200]}")
        content_type = response.headers.get("Content-Type", "").split(";")[0].strip()
        if content_type != "application/json":
            raise MalformedAnswer(f"offer API answered 200 with content type "
                                  f"{content_type or 'none'!r}, not application/json")
        try:
            answers = {a["request_id"]: a for a in response.json()["quotes"]}
        except (ValueError, KeyError, TypeError) as error:
            raise MalformedAnswer(f"offer API answered 200 with a body that is not its JSON "
                                  f"answer ({type(error).__name__})") from error
        return [apply_quote(row, answers.get(row["prediction_id"],
                                             {"status": "missing",
                                              "reason": "no answer for this request"}))
                for row in rows]


class BatchOfferCaller(OfferCaller):
    """``OfferCaller`` for the pipeline: one element is a record batch of scored rows (at most
    the call's batch size; the pipeline cuts them), answered as the same batch with its offer
    columns filled, so no per-row element crosses Beam."""

    def batch_elements_kwargs(self):
        return {}  # elements are batches already

    def __call__(self, rows: pa.RecordBatch) -> pa.RecordBatch:
        answered = self.call(rows.to_pylist(), self._timeout_secs)
        return pa.RecordBatch.from_pylist(answered, schema=rows.schema)


def is_transient(error: BaseException) -> bool:
    return isinstance(error, (UserCodeTimeoutException, UserCodeQuotaException,
                              ServiceUnavailable))


class DeadLetteringRepeater(Repeater):
    """Retries transient failures with jittered exponential backoff; never raises.

    Args:
        max_retries: retries after the first attempt.
        initial_delay_secs: first backoff; doubles each retry (with jitter).
        max_delay_secs: cap of one backoff.
        throttler: the transform's DefaultThrottler. RequestResponseIO only reports the
            successful end of a call to it; each failed attempt is reported here as a request
            without success, so a failing service raises the client-side throttling.
    """

    def __init__(self, max_retries: int = 3, initial_delay_secs: float = 0.2,
                 max_delay_secs: float = 5.0, throttler: DefaultThrottler | None = None):
        self._max_retries = max_retries
        self._initial_delay_secs = initial_delay_secs
        self._max_delay_secs = max_delay_secs
        self._throttler = throttler

    def repeat(self, caller, request, timeout, metrics_collector=None):
        delays = iter(FuzzedExponentialIntervals(
            self._initial_delay_secs, self._max_retries, max_delay_secs=self._max_delay_secs))
        attempts = 0
        while True:
            attempts += 1
            try:
                return caller(request)
            except UserCodeExecutionException as error:
                if self._throttler is not None:
                    self._throttler.throttler.throttle_request(time.time() * 1000)
                delay = next(delays, None) if is_transient(error) else None
                if delay is None:
                    if metrics_collector is not None:
                        metrics_collector.failures.inc(1)
                    LOGGER.warning("offer call failed for %d requests: %s", len(request), error)
                    return fail_rows(request, error, attempts)
                time.sleep(delay)


class RequestOffers(beam.PTransform):
    """Record batches of scored rows with a bank (at most ``batch_size`` rows each) -> the same
    rows with an offer, or with offer_status "failed".

    Args:
        url: base URL of the offers API.
        fields: quote field -> data set field (the offer rules' ``fields``).
        timeout_secs: timeout of one HTTP call.
        max_retries: retries of a transient failure.
        batch_size: most requests per HTTP call.
    """

    def __init__(self, url: str, fields: dict, timeout_secs: float = 2.0, max_retries: int = 3,
                 batch_size: int = 50):
        super().__init__()
        self._caller = BatchOfferCaller(url, fields, timeout_secs, batch_size)
        self._timeout_secs = timeout_secs
        # Throttle once fewer than half the attempts of the last minute succeeded.
        self._throttler = DefaultThrottler(window_ms=60_000, bucket_ms=1_000, overload_ratio=2,
                                           delay_secs=1)
        self._repeater = DeadLetteringRepeater(max_retries, throttler=self._throttler)

    def expand(self, rows):
        return rows | "CallOfferApi" >> RequestResponseIO(
            self._caller, timeout=self._timeout_secs, repeater=self._repeater,
            throttler=self._throttler)
