"""The interactive offers API: one applicant in, a decision and the bank's offer out, at once.

``POST /v1/offers`` with a credit request (``request_id``, optional ``event_time``, the served
data set's fields) -> validate -> score (the serving function over HTTP with
``--model_endpoint``, else the version's SavedModel in this process) -> offer rules -> the
chosen bank's offer API -> ``{"request_id", "score", "decision", "bank", "offer_status",
"offer", "versions", "latency_ms"}``. The caller's deadline (``X-Deadline-Ms``, default
``--deadline_ms``) bounds the bank call: past it the answer is 504; a bank that fails or
rejects gives 502; bad input 400 naming the field. Every body says what failed.

Every answered request is sampled with the pipelines' deterministic rule into the same
Hive-partitioned Parquet layout (same columns, ``run_mode=online``), and failures go to the same
dead letters, so the scheduled evaluation covers online traffic unchanged. A row (or dead
letter) is fsynced in a spool before its answer is released (``services.spool``: one fsync per
group of concurrent answers) and written as Parquet every ``--flush_secs`` or ``--flush_rows``,
on shutdown, and, after a crash, at the next start: nothing answered is lost, a kill included.
Clients retry: a request id is claimed atomically in SQLite, or Redis for several processes
(``services.idempotency``, ``--idempotency_store``), so the
same id with the same payload gets the original answer back (no second score, no second bank
call), concurrent duplicates and restarts included; another payload is a 409. A 502/503/504 is
not final: a retry does it again.

At the edge: a body over ``--max_body_bytes`` is refused while it is read (413), a body that is
not ``application/json`` is 415, JSON is the pipelines' strict parser, ``X-Deadline-Ms`` must be
finite, positive and at most ``--max_deadline_ms`` (else 400 and a dead letter), at most
``--bank_concurrency`` bank calls are in flight (more: 503 at once, so a hanging bank starves
nobody), and with a token (``--token_file`` or ``BEAMLINE_OFFERS_TOKEN``) a request without
``Authorization: Bearer <token>`` is 401. The serving function's token is passed on
(``--model_endpoint_token_file`` or ``BEAMLINE_MODEL_TOKEN``).

Usage::

    python -m services.offers_api --registry registry --model_name credit_german \\
        --offer_url http://127.0.0.1:8765 --output out [--model_endpoint http://127.0.0.1:8501]
"""

import argparse
import contextlib
import datetime
import hashlib
import json
import logging
import math
import os
import sys
import threading
import time

import pyarrow as pa
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from models import registry as model_registry
from models.exit_codes import run_command
from models.provenance import code_version, new_run_id
from services.http import HttpError, TimedH11Protocol, bearer_ok, read_json_body, read_token
from services.idempotency import open_store
from services.spool import Sink, Spool, SpoolError
from transforms.common import dead_letters as dead
from transforms.common.predictions import PARTITION_COLUMNS, PREDICTIONS
from transforms.common.sampling import keep_prediction
from transforms.credit import rows as credit_rows
from transforms.credit.offers import FAILED, OfferCaller
from transforms.credit.requests import (
    MAX_REQUEST_ID_LENGTH,
    RequestError,
    load_json,
    misfit,
    parse_request,
)
from transforms.credit.rules import (
    decide,
)
from transforms.credit.setup import credit_setup

LOGGER = logging.getLogger(__name__)
CONFIG_ENV = "BEAMLINE_OFFERS_API"
TOKEN_ENV = "BEAMLINE_OFFERS_TOKEN"
MODEL_TOKEN_ENV = "BEAMLINE_MODEL_TOKEN"
MAX_DEADLINE_MS = 30_000.0
BANK_CONCURRENCY = 16
PIPELINE = "credit_scoring"


class OfferError(Exception):
    """An answer other than 200 (the serving function failed): its status and message."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class SampleWriter:
    """Sampled prediction rows and dead letters, each durable in the spool before ``add``
    returns (``services.spool``), written as Parquet every ``flush_secs`` or ``flush_rows``
    and on ``close``; what a killed process spooled is written at the next start."""

    def __init__(self, output: str, run_id: str, model_name: str, schema: pa.Schema,
                 flush_secs: float, flush_rows: int, spool_dir: str | None = None):
        output = output.rstrip("/")
        if spool_dir is None:
            if "://" in output:
                raise SpoolError(f"--output {output} is not a local folder: give --spool_dir "
                                 f"(a local disk; answers wait for it)")
            spool_dir = os.path.join(output, "_spool", "online")
        self._model_name = model_name
        self._flush_secs = flush_secs
        self._flush_rows = flush_rows
        self.spool = Spool(spool_dir, {
            "predictions": Sink(f"{output}/{PREDICTIONS}", schema, PARTITION_COLUMNS),
            "dead_letters": Sink(f"{output}/{dead.DEAD_LETTERS}", dead.SCHEMA,
                                 dead.PARTITION_COLUMNS)}, run_id)
        self.recovered = self.spool.recover()
        if self.recovered:
            LOGGER.warning("wrote %d rows a stopped process had spooled in %s", self.recovered,
                           spool_dir)
        self._pending = 0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="sample-writer", daemon=True)
        self._thread.start()

    def add(self, row: dict | None = None, dead_letter: dict | None = None) -> None:
        """Spool a row or a dead letter; returns once it is on disk.

        Raises:
            SpoolError: it is not (the answer must not be released as a success).
        """
        if row is not None:
            self.spool.append("predictions", row)
        if dead_letter is not None:
            self.spool.append("dead_letters", dict(dead_letter, model_name=self._model_name))
        self._pending += 1
        if self._pending >= self._flush_rows:
            self._wake.set()

    def _loop(self):
        while not self._stop.is_set():
            self._wake.wait(self._flush_secs)
            self._wake.clear()
            self.flush()

    def flush(self) -> int:
        """Write what is spooled as Parquet; returns how many rows were written."""
        self._pending = 0
        return self.spool.flush()

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=30)
        self.spool.close()


class OffersService:
    """What the API does, without HTTP: one request in, one answer (or an OfferError) out."""

    def __init__(self, registry: str, model_name: str, version: str, offer_url: str,
                 output: str, sample_rate: float = 0.1, model_endpoint: str | None = None,
                 endpoint_token: str | None = None, rules_path: str | None = None,
                 idempotency_secs: float = 3600.0, flush_secs: float = 5.0,
                 flush_rows: int = 1000, shadow_version: str | None = None,
                 spool_dir: str | None = None, max_deadline_ms: float = MAX_DEADLINE_MS,
                 bank_concurrency: int = BANK_CONCURRENCY,
                 idempotency_store: str | None = None):
        # The same set-up as the credit pipeline's launch (transforms.credit.setup); the
        # shadow's export is loaded below (ServedVersion), which checks it: no second load.
        setup = credit_setup(registry, model_name, version, rules_path, shadow_version,
                             load_shadow=False)
        self.ref, self.dataset, self.privacy, self.rules = (setup.model, setup.dataset,
                                                            setup.privacy, setup.rules)
        self.sample_rate = sample_rate
        self.run_id = new_run_id("online")
        self.context = {"pipeline": PIPELINE, "run_mode": "online", "run_id": self.run_id,
                        "code_version": code_version(), "pii_key_id": self.privacy.key_id,
                        # In process the SavedModel export scores: rows name its digest.
                        "models": {self.ref.path: (self.ref.name, self.ref.version,
                                                   self.ref.export_sha256("saved_model"))}}
        self.offers = OfferCaller(offer_url, self.rules.fields)
        self.endpoint = model_endpoint
        self.endpoint_token = endpoint_token
        self._sessions = threading.local()
        self._local = None
        if not model_endpoint:
            from services.model_server import ServedVersion

            self._local = ServedVersion(self.ref)
        self._shadow, self.shadow_note = self._load_shadow(setup.shadow, setup.shadow_note)
        self.shadow_failures = 0
        LOGGER.info("%s", self.shadow_note)
        self.writer = SampleWriter(output, self.run_id, model_name,
                                   credit_rows.prediction_schema(self.dataset.stored_kinds),
                                   flush_secs, flush_rows, spool_dir)
        self.max_deadline_ms = max_deadline_ms
        self.claims = open_store(
            idempotency_store or os.path.join(os.path.dirname(self.writer.spool.folder),
                                              "idempotency.sqlite"),
            idempotency_secs, pending_secs=max_deadline_ms / 1000.0 + 30.0)
        # A bank that hangs holds at most this many calls (and threads) at once; requests for
        # it beyond them fail at once instead of starving everyone else's.
        self._bank_slots = threading.BoundedSemaphore(bank_concurrency)

    @staticmethod
    def _load_shadow(shadow, note: str):
        """(the shadow's loaded export or None, a sentence saying which and why)."""
        from services.model_server import ServedVersion

        if shadow is None:
            return None, note
        try:
            return ServedVersion(shadow), note
        except Exception as error:  # noqa: BLE001 - a broken shadow never stops serving
            return None, f"shadow {shadow.version} left out: {type(error).__name__}: {error}"

    def shadow_columns(self, fields: dict) -> dict:
        """The shadow's answer for a sampled row (empty when none is set or it fails: the
        row's shadow columns stay null, the champion's answer is already given)."""
        if self._shadow is None:
            return {}
        try:
            score = float(self._shadow.predict([fields])[0])
        except Exception as error:  # noqa: BLE001 - counted and logged, nothing else
            self.shadow_failures += 1
            LOGGER.warning("the shadow could not score a request (%s: %s)",
                           type(error).__name__, error)
            return {}
        ref = self._shadow.ref
        return {"shadow_model_version": ref.version,
                "shadow_model_sha256": ref.export_sha256("saved_model"),
                "shadow_score": score, "shadow_decision": decide(score, self.rules)}

    def score(self, fields: dict) -> tuple[float, str]:
        """(score, model id) from the serving function or the local export."""
        if self._local is not None:
            return self._local.predict([fields])[0], self.ref.path
        import requests

        headers = ({"Authorization": f"Bearer {self.endpoint_token}"}
                   if self.endpoint_token else {})
        url = (f"{self.endpoint.rstrip('/')}/v1/models/{self.ref.name}/versions/"
               f"{int(self.ref.version[1:])}:predict")
        session = getattr(self._sessions, "session", None)
        if session is None:  # one keep-alive connection per worker thread
            session = self._sessions.session = requests.Session()
        try:
            answer = session.post(url, json={"instances": [fields]}, headers=headers, timeout=5)
        except requests.RequestException as error:
            raise OfferError(502, f"serving function unreachable: {error}") from None
        if answer.status_code != 200:
            raise OfferError(502, f"serving function answered {answer.status_code}: "
                                  f"{answer.text[:200]}")
        body = answer.json()
        return float(body["predictions"][0]), model_registry.remote_model_id(body["model"])

    def answer(self, raw: bytes, deadline_ms: float) -> tuple[int, dict]:
        """(HTTP status, body) for one request body; idempotent by request id (an atomic
        claim in ``services.idempotency``: concurrent duplicates and restarts included)."""
        started = time.monotonic()
        text = raw.decode("utf-8", "replace")
        digest = hashlib.sha256(raw).hexdigest()
        try:
            request_id = load_json(text).get("request_id")
        except (RequestError, AttributeError):
            request_id = None
        if not (isinstance(request_id, str) and 0 < len(request_id) <= MAX_REQUEST_ID_LENGTH):
            return self._answer(text, started, deadline_ms)  # refused with the reason
        claim = self.claims.claim(request_id, digest)
        if claim.busy:  # a duplicate sent at the same time: wait for the first one's answer
            claim = self.claims.wait(request_id, digest, deadline_ms / 1000.0)
        if claim.conflict:
            return 409, {"error": "this request_id was already used for another payload",
                         "request_id": request_id}
        if claim.answer:
            return claim.answer[0], dict(claim.answer[1], replayed=True)
        if claim.busy:
            return 409, {"error": "this request_id is being answered now; retry later",
                         "request_id": request_id}
        status, body = 500, {}
        try:
            status, body = self._answer(text, started, deadline_ms)
        finally:
            self.claims.settle(request_id, status, body)
        return status, body

    def refuse(self, text: str, error: RequestError) -> tuple[int, dict]:
        """A 400 and its dead letter (the raw body redacted as the data set says)."""
        received = datetime.datetime.now(datetime.UTC)
        raw, raw_hmac = self.privacy.redact_raw(text, error.field)
        self.writer.add(dead_letter=dead.dead_letter(
            pipeline=PIPELINE, stage=error.stage, error=error, raw=raw, origin="online",
            run_id=self.run_id, failed_at=received,
            raw_bytes=len(text.encode("utf-8", errors="replace")), raw_hmac=raw_hmac))
        return 400, {"error": str(error), "stage": error.stage}

    def _answer(self, text: str, started: float, deadline_ms: float) -> tuple[int, dict]:
        received = datetime.datetime.now(datetime.UTC)
        body = _with_event_time(text, received)
        try:
            request = parse_request(body, "online", received, self.dataset.fields,
                                    privacy=self.privacy if self.privacy.active else None)
        except RequestError as error:
            return self.refuse(text, error)
        score, model_id = self.score(request.fields)
        row = credit_rows.scored_row(credit_rows.request_key(request),
                                     {**request.fields, **request.pseudonyms}, score,
                                     model_id, self.context, self.rules)
        if credit_rows.needs_offer(row):
            remaining = deadline_ms / 1000.0 - (time.monotonic() - started)
            row = self._offer(row, remaining)
        row = credit_rows.stamp_processed(row)
        if row["offer_status"] == FAILED:
            self.writer.add(dead_letter=credit_rows.offer_dead_letter(
                row, tuple(self.dataset.stored_kinds)))
            status = {"UserCodeTimeoutException": 504, "BankBusy": 503}.get(
                row["offer_error_class"], 502)
            return status, {"error": row["offer_error"], **_answer_body(row)}
        if keep_prediction(row["prediction_id"], self.sample_rate):
            self.writer.add(row={**row, **self.shadow_columns(request.fields)})
        return 200, _answer_body(row)

    def _offer(self, row: dict, remaining_secs: float) -> dict:
        from apache_beam.io.requestresponse import (
            UserCodeExecutionException,
            UserCodeTimeoutException,
        )

        if remaining_secs <= 0:
            return dict(row, offer_status=FAILED, offer_error_class="UserCodeTimeoutException",
                        offer_error="deadline passed before the bank was asked")
        if not self._bank_slots.acquire(blocking=False):
            return dict(row, offer_status=FAILED, offer_error_class="BankBusy",
                        offer_error="every call slot to the bank is taken by calls still "
                                    "waiting for it; retry later")
        try:
            return self.offers.call([row], remaining_secs)[0]
        except UserCodeTimeoutException as error:
            return dict(row, offer_status=FAILED, offer_error_class=type(error).__name__,
                        offer_error=f"{error} (the caller's deadline)")
        except UserCodeExecutionException as error:
            return dict(row, offer_status=FAILED, offer_error_class=type(error).__name__,
                        offer_error=str(error))
        finally:
            self._bank_slots.release()


def _with_event_time(text: str, received: datetime.datetime) -> str:
    """An interactive request may leave event_time out: it happens now."""
    try:
        body = load_json(text)
    except RequestError:
        return text
    if isinstance(body, dict) and "event_time" not in body:
        body["event_time"] = received.isoformat()
        return json.dumps(body)
    return text


def _answer_body(row: dict) -> dict:
    offer = None
    if row["offer_status"] == "offered":
        offer = {"offer_id": row["offer_id"], "apr": row["offer_apr"],
                 "monthly_payment": row.get("offer_monthly_payment"),
                 "rates_version": row.get("offer_rates_version")}
    return {"request_id": row["request_id"], "score": row["score"],
            "decision": row["decision"], "bank": row["bank"],
            "offer_status": row["offer_status"], "offer": offer,
            "versions": {"model": {"name": row["model_name"], "version": row["model_version"],
                                   "sha256": row["model_sha256"]},
                         "rules": row["rules_version"], "code": row["code_version"]},
            "latency_ms": round(row["latency_ms"], 2)}


def create_app(service: OffersService, default_deadline_ms: float = 2000.0,
               max_body_bytes: int = 64 * 1024, token: str | None = None) -> Starlette:
    """The ASGI application around one OffersService; shutting down flushes the samples."""

    async def offers(request: Request):
        if not bearer_ok(request, token):
            return JSONResponse({"error": "missing or wrong bearer token"}, status_code=401)
        try:
            raw, _ = await read_json_body(request, max_body_bytes)
        except HttpError as error:
            return JSONResponse({"error": str(error)}, status_code=error.status)
        given = request.headers.get("x-deadline-ms")
        try:
            deadline = default_deadline_ms if given is None else float(given)
        except ValueError:
            deadline = math.nan
        if not (math.isfinite(deadline) and 0 < deadline <= service.max_deadline_ms):
            error = RequestError("validate", f"X-Deadline-Ms must be a number of milliseconds "
                                             f"above 0 and at most {service.max_deadline_ms:g}, "
                                             f"got {misfit(given)}")
            status, body = await run_in_threadpool(service.refuse, raw.decode("utf-8"), error)
            return JSONResponse(body, status_code=status)
        try:
            status, body = await run_in_threadpool(service.answer, raw, deadline)
        except OfferError as error:
            status, body = error.status, {"error": str(error)}
        except SpoolError as error:  # the answer could not be made durable: not given
            status, body = 503, {"error": f"the answer could not be recorded ({error}); "
                                          f"retry"}
        return JSONResponse(body, status_code=status)

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        yield
        service.writer.close()  # SIGTERM: write everything answered before exiting

    return Starlette(routes=[Route("/v1/offers", offers, methods=["POST"])], lifespan=lifespan)


def app_from_environment() -> Starlette:
    """The app of a worker process, configured by the parent through the environment (the
    tokens through their own variables, never in this one)."""
    config = json.loads(os.environ[CONFIG_ENV])
    deadline = config.pop("deadline_ms")
    config["endpoint_token"] = os.environ.get(MODEL_TOKEN_ENV) or None
    return create_app(OffersService(**config), deadline,
                      token=os.environ.get(TOKEN_ENV) or None)


def main(argv=None) -> int:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--registry", default="registry")
    parser.add_argument("--model_name", default="credit_german")
    parser.add_argument("--model_version", default="production",
                        help="version or alias, resolved once at start")
    parser.add_argument("--model_endpoint", default=None,
                        help="serving function URL (default: score in this process)")
    parser.add_argument("--offer_url", required=True, help="base URL of the banks' offer API")
    parser.add_argument("--shadow_version", default=None,
                        help="version or alias scored beside the served one for the sampled "
                             "rows only (default: the registry's shadow alias; none = no "
                             "shadow)")
    parser.add_argument("--output", default="out", help="where sampled rows and dead letters go")
    parser.add_argument("--sample_rate", type=float, default=0.1)
    parser.add_argument("--deadline_ms", type=float, default=2000.0,
                        help="default deadline of one answer (X-Deadline-Ms overrides)")
    parser.add_argument("--max_deadline_ms", type=float, default=MAX_DEADLINE_MS,
                        help="the longest X-Deadline-Ms accepted (longer: 400)")
    parser.add_argument("--bank_concurrency", type=int, default=BANK_CONCURRENCY,
                        help="most bank calls in flight at once (more: 503 at once)")
    parser.add_argument("--spool_dir", default=None,
                        help="local folder answers are made durable in before they are given "
                             "(default: <output>/_spool/online)")
    parser.add_argument("--token_file", default=None,
                        help="a file holding the bearer token clients must send (or "
                             f"${TOKEN_ENV}; none: no authentication)")
    parser.add_argument("--token", default=None, help="the token itself (`ps` shows it)")
    parser.add_argument("--model_endpoint_token_file", default=None,
                        help=f"a file holding the serving function's token (or "
                             f"${MODEL_TOKEN_ENV})")
    parser.add_argument("--model_endpoint_token", default=None,
                        help="the serving function's token itself (`ps` shows it)")
    parser.add_argument("--idempotency_secs", type=float, default=3600.0)
    parser.add_argument("--idempotency_store", default=None,
                        help="where request ids are claimed: a SQLite file (default "
                             "<output>/_spool/idempotency.sqlite; one machine) or "
                             "redis://host:port/db (several processes or machines)")
    parser.add_argument("--flush_secs", type=float, default=5.0)
    parser.add_argument("--flush_rows", type=int, default=1000)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8600)
    parser.add_argument("--port_file", default=None, help="write the port here once listening")
    args = parser.parse_args(argv)
    config = {k: getattr(args, k) for k in (
        "registry", "model_name", "offer_url", "output", "sample_rate", "model_endpoint",
        "idempotency_secs", "flush_secs", "flush_rows", "deadline_ms", "shadow_version",
        "spool_dir", "max_deadline_ms", "bank_concurrency", "idempotency_store")}
    config["version"] = args.model_version
    os.environ[CONFIG_ENV] = json.dumps(config)
    try:
        for env, what, file, given in (
                (TOKEN_ENV, "offers API", args.token_file, args.token),
                (MODEL_TOKEN_ENV, "serving function", args.model_endpoint_token_file,
                 args.model_endpoint_token)):
            value = read_token(what, env, file, given)
            if value:
                os.environ[env] = value
        app = app_from_environment()
    except (ValueError, model_registry.RegistryError, SpoolError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    server = uvicorn.Server(uvicorn.Config(app, host=args.host, port=args.port,
                                           log_level="warning", http=TimedH11Protocol))
    if args.port_file:
        def announce():
            while not server.started:
                time.sleep(0.05)
            port = server.servers[0].sockets[0].getsockname()[1]
            with open(args.port_file, "w", encoding="utf-8") as f:
                f.write(str(port))
        threading.Thread(target=announce, daemon=True).start()
    print(f"offers API on http://{args.host}:{args.port}/v1/offers", flush=True)
    server.run()
    return 0


if __name__ == "__main__":
    sys.exit(run_command(main))
