"""A stand-in for the partner banks' offer API: a small HTTP service on 127.0.0.1.

``POST /v1/quotes`` with ``{"quotes": [{"request_id", "bank", "score", "idempotency_key", and
"amount", "duration_months", "purpose" where the data set has them}, ...]}`` answers
``{"rates_version",
"quotes": [...]}`` with one entry per quote request (a monthly payment only when amount and
duration are given): ``{"status": "ok", "offer_id", "apr", "monthly_payment", ...}`` or
``{"status": "rejected", "reason"}``. A quote whose ``idempotency_key`` was seen gets the first
answer again (``replayed`` in the stats), never a second quote (``quotes_created``).
``GET /healthz`` answers ok; ``GET /stats`` counts calls.

Faults can be injected to exercise the client: a fixed latency, a fraction of calls failing with
500, 429 or a hang (a timeout for the client, after the bank priced the quotes), and a fraction
of applicants the bank always rejects (``poison_fraction``, chosen by a hash of the request id,
so it is reproducible). ``--chaos`` fails half the calls with every kind of fault a gateway
produces: besides those three, slow answers, a 200 whose body is an HTML page, a JSON body
sent as text/plain, and an answer cut short (each after the bank priced the quotes).
In production the pipeline's ``--offer_url`` points at the real banks' gateway instead.

Usage::

    python -m services.bank_offers --port 8765 --fail_rate 0.1 --latency_ms 5
"""

import argparse
import contextlib
import dataclasses
import hashlib
import json
import logging
import pathlib
import random
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from models.exit_codes import run_command

LOGGER = logging.getLogger(__name__)
RATES_VERSION = "2026-11-27"
# Base APR (percent) per bank and the surcharge per score band.
BASE_APR = {"alpenbank": 4.9, "hansa_kredit": 6.2, "rheinland_direkt": 7.9}
SCORE_BANDS = ((0.95, 0.0), (0.90, 1.0), (0.85, 2.0), (0.0, 3.5))
FAULT_KINDS = ("500", "429", "timeout")
CHAOS_KINDS = (*FAULT_KINDS, "slow", "not_json", "wrong_content_type", "cut_short")
CHAOS_FAIL_RATE = 0.5


@dataclasses.dataclass
class Faults:
    """What goes wrong, and how often.

    Attributes:
        latency_ms: added to every call.
        fail_rate: share of calls that fail with one of ``fail_kinds``.
        fail_kinds: which failures: "500", "429" (with Retry-After), "timeout" (a hang),
            "slow" (a correct answer after a random wait of up to ``hang_secs``), "not_json"
            (200 with an HTML page), "wrong_content_type" (the JSON answer as text/plain),
            "cut_short" (the connection closes half way through the answer).
        hang_secs: how long a "timeout" call hangs before answering 504.
        poison_fraction: share of applicants (by request id hash) always rejected with
            status "error".
        seed: seed of the failure draws.
    """

    latency_ms: float = 0.0
    fail_rate: float = 0.0
    fail_kinds: tuple[str, ...] = FAULT_KINDS
    hang_secs: float = 3.0
    poison_fraction: float = 0.0
    seed: int = 0


def _unit_hash(text: str) -> float:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") / float(1 << 64)


def is_poisoned(request_id: str, poison_fraction: float) -> bool:
    """Whether the bank always rejects this applicant (reproducible from the id alone)."""
    return _unit_hash("poison:" + request_id) < poison_fraction


def monthly_payment(amount: float, apr_percent: float, months: float) -> float:
    """Annuity payment of a loan."""
    rate = apr_percent / 100.0 / 12.0
    months = max(1, int(round(months)))
    if rate == 0:
        return amount / months
    return amount * rate / (1.0 - (1.0 + rate) ** -months)


def quote(item: dict, poison_fraction: float) -> dict:
    """One quote request -> the bank's answer (a pure function of the request)."""
    request_id = str(item.get("request_id", ""))
    bank = item.get("bank")
    if bank not in BASE_APR:
        return {"request_id": request_id, "status": "rejected", "reason": f"unknown bank {bank!r}"}
    if is_poisoned(request_id, poison_fraction):
        return {"request_id": request_id, "status": "error",
                "reason": "bank system could not price this applicant"}
    score = float(item["score"])
    surcharge = next(s for floor, s in SCORE_BANDS if score >= floor)
    apr = round(BASE_APR[bank] + surcharge, 2)
    offer_id = hashlib.sha256(f"{bank}:{request_id}:{RATES_VERSION}".encode()).hexdigest()[:16]
    amount, months = item.get("amount"), item.get("duration_months")
    # A quote without amount or duration (a data set that has neither) gets a rate only.
    payment = (round(monthly_payment(float(amount), apr, float(months)), 2)
               if amount is not None and months is not None else None)
    return {
        "request_id": request_id, "status": "ok", "bank": bank, "offer_id": offer_id,
        "apr": apr, "amount": amount, "duration_months": months, "monthly_payment": payment,
        "rates_version": RATES_VERSION,
    }


class _Handler(BaseHTTPRequestHandler):
    server: "OfferServer"

    def log_message(self, fmt, *args):  # route the default stderr access log to logging
        LOGGER.debug(fmt, *args)

    def _send(self, status: int, body: dict, headers: dict | None = None):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path == "/healthz":
            self._send(200, {"status": "ok"})
        elif self.path == "/stats":
            self._send(200, self.server.stats())
        else:
            self._send(404, {"error": "not found"})

    def do_POST(self):
        if self.path != "/v1/quotes":
            self._send(404, {"error": "not found"})
            return
        length = int(self.headers.get("Content-Length", 0))
        raw = self.rfile.read(length)
        faults = self.server.faults
        self.server.count("calls")
        if faults.latency_ms:
            time.sleep(faults.latency_ms / 1000.0)
        try:
            items = json.loads(raw)["quotes"]
            if not isinstance(items, list):
                raise TypeError("quotes must be a list")
        except (ValueError, KeyError, TypeError) as error:
            self._send(400, {"error": f"bad request body: {error}"})
            return
        self.server.count_attempts(items)
        failure = self.server.draw_failure()
        if failure == "500":
            self.server.count("failed_500")
            self._send(500, {"error": "injected internal error"})
            return
        if failure == "429":
            self.server.count("failed_429")
            self._send(429, {"error": "injected rate limit"}, {"Retry-After": "1"})
            return
        answers = [self.server.quote_once(item) for item in items]
        # From here on the bank has priced the quotes: a failure loses the answer, and a retry
        # must not price them again, which the idempotency keys ensure.
        body = {"rates_version": RATES_VERSION, "quotes": answers}
        if failure is not None:
            self.server.count(f"failed_{failure}")
        if failure == "timeout":
            time.sleep(faults.hang_secs)
            self._send(504, {"error": "injected hang"})
        elif failure == "slow":
            time.sleep(self.server.draw_wait())
            self._send(200, body)
        elif failure == "not_json":
            self._send_raw(200, b"<html><body>502 Bad Gateway</body></html>", "text/html")
        elif failure == "wrong_content_type":
            self._send_raw(200, json.dumps(body).encode(), "text/plain")
        elif failure == "cut_short":
            data = json.dumps(body).encode()
            self._send_raw(200, data[:len(data) // 2], "application/json", len(data))
            self.close_connection = True
        else:
            self.server.count("quotes", len(answers))
            self._send(200, body)

    def _send_raw(self, status: int, data: bytes, content_type: str,
                  length: int | None = None):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(length if length is not None else len(data)))
        self.end_headers()
        self.wfile.write(data)


class OfferServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address, faults: Faults):
        super().__init__(address, _Handler)
        self.faults = faults
        self._random = random.Random(faults.seed)
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}
        self._answers: dict[str, dict] = {}  # idempotency key -> first answer
        self._attempts: dict[str, int] = {}  # idempotency key -> calls that carried it

    def handle_error(self, request, client_address):
        """A caller that gave up before an injected hang ended is expected, not an error worth
        a traceback on the console of whoever runs the service in process."""
        if isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            return
        super().handle_error(request, client_address)

    def draw_failure(self) -> str | None:
        with self._lock:
            if self._random.random() < self.faults.fail_rate:
                return self._random.choice(self.faults.fail_kinds)
        return None

    def count_attempts(self, items: list) -> None:
        """Count the calls each quote arrived in (``max_calls_per_quote`` in the stats: how
        many attempts a client made at most, whatever happened to them)."""
        with self._lock:
            for item in items:
                key = item.get("idempotency_key") if isinstance(item, dict) else None
                if key is not None:
                    self._attempts[key] = self._attempts.get(key, 0) + 1

    def draw_wait(self) -> float:
        with self._lock:
            return self._random.uniform(0.0, self.faults.hang_secs)

    def quote_once(self, item: dict) -> dict:
        """``quote``, remembered by the item's ``idempotency_key``: a key seen before gets its
        first answer again (counted as ``replayed``), never a second quote."""
        key = item.get("idempotency_key")
        with self._lock:
            if key is not None and key in self._answers:
                self._counts["replayed"] = self._counts.get("replayed", 0) + 1
                return self._answers[key]
        answer = quote(item, self.faults.poison_fraction)
        with self._lock:
            self._counts["quotes_created"] = self._counts.get("quotes_created", 0) + 1
            if key is not None:
                self._answers.setdefault(key, answer)
        return answer

    def count(self, name: str, n: int = 1):
        with self._lock:
            self._counts[name] = self._counts.get(name, 0) + n

    def stats(self) -> dict:
        with self._lock:
            most = max(self._attempts.values(), default=0)
            return {**self._counts, **({"max_calls_per_quote": most} if most else {})}

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"


@contextlib.contextmanager
def running_offer_service(faults: Faults | None = None, host: str = "127.0.0.1", port: int = 0):
    """Run the service in a background thread for the duration of a ``with`` block.

    Yields:
        The OfferServer (``.url`` is where it listens; port 0 picks a free port).
    """
    server = OfferServer((host, port), faults or Faults())
    thread = threading.Thread(target=server.serve_forever, name="bank-offers", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="Stand-in for the partner banks' offer API.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--port_file", help="write the chosen port here once listening")
    parser.add_argument("--latency_ms", type=float, default=0.0)
    parser.add_argument("--fail_rate", type=float, default=0.0)
    parser.add_argument("--fail_kinds", default=",".join(FAULT_KINDS))
    parser.add_argument("--hang_secs", type=float, default=3.0)
    parser.add_argument("--poison_fraction", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--chaos", action="store_true",
                        help=f"fail half the calls with every fault kind "
                             f"({', '.join(CHAOS_KINDS)})")
    args = parser.parse_args(argv)
    if args.chaos:
        args.fail_rate, args.fail_kinds = CHAOS_FAIL_RATE, ",".join(CHAOS_KINDS)
    unknown = set(args.fail_kinds.split(",")) - set(CHAOS_KINDS) - {""}
    if unknown:
        parser.error(f"unknown --fail_kinds {', '.join(sorted(unknown))}; known: "
                     f"{', '.join(CHAOS_KINDS)}")
    logging.basicConfig(level=logging.INFO)
    faults = Faults(latency_ms=args.latency_ms, fail_rate=args.fail_rate,
                    fail_kinds=tuple(k for k in args.fail_kinds.split(",") if k),
                    hang_secs=args.hang_secs, poison_fraction=args.poison_fraction,
                    seed=args.seed)
    server = OfferServer((args.host, args.port), faults)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    if args.port_file:
        pathlib.Path(args.port_file).write_text(str(server.server_address[1]))
    print(f"bank offers service on {server.url}", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()


if __name__ == "__main__":
    sys.exit(run_command(main))
