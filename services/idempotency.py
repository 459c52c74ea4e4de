"""Idempotent answers of the offers API: one atomic claim per request id, in SQLite or Redis.

A request id is claimed atomically (SQLite: ``INSERT ... ON CONFLICT DO NOTHING`` in one
transaction; Redis: ``SET ... NX``), so of concurrent duplicates exactly one goes on to score
and call the bank; the others wait for its answer (up to their deadline) and get it back. The
SQLite file lives beside the outputs (one machine; a restart keeps every claim and answer);
Redis serves several processes or machines behind a balancer (its persistence is Redis's
configuration: ``appendonly yes`` to survive a Redis restart).

Which outcomes are final (kept and replayed for ``--idempotency_secs``): a 200 answer
(offered, no bank, declined, referred); the same id with another payload is then a 409. Not
final (the claim is released and a retry does it again): 502 and 504 (the bank failed or the
deadline passed: a retry with a longer deadline may succeed, and the bank's own idempotency
key, the prediction id, keeps it from pricing twice), 503, and a 400 (the same body is
refused the same way anyway).
"""

import dataclasses
import json
import sqlite3
import threading
import time

FINAL = frozenset({200})
_SCHEMA = """
CREATE TABLE IF NOT EXISTS claims (
    request_id TEXT PRIMARY KEY,
    digest TEXT NOT NULL,
    claimed_at REAL NOT NULL,
    status INTEGER,
    body TEXT
)
"""


@dataclasses.dataclass(frozen=True)
class Claim:
    """What ``claim`` found: ``mine`` (go on), ``answer`` (status, body) to replay,
    ``conflict`` (the id was used for another payload) or ``busy`` (still being answered)."""

    mine: bool = False
    answer: tuple[int, dict] | None = None
    conflict: bool = False
    busy: bool = False


def open_store(location: str, keep_secs: float, pending_secs: float):
    """``redis://host:port/db`` -> ``RedisClaimStore``; anything else is a SQLite file path."""
    if location.startswith(("redis://", "rediss://", "unix://")):
        return RedisClaimStore(location, keep_secs, pending_secs)
    return ClaimStore(location, keep_secs, pending_secs)


class _Waiting:
    def wait(self, request_id: str, digest: str, seconds: float) -> Claim:
        """Poll a busy claim until it is answered, released (then it is ours) or time is up."""
        deadline = time.monotonic() + seconds
        while True:
            claim = self.claim(request_id, digest)
            if not claim.busy or time.monotonic() >= deadline:
                return claim
            time.sleep(0.01)


class ClaimStore(_Waiting):
    """Claims and final answers by request id, in one SQLite file."""

    def __init__(self, path: str, keep_secs: float, pending_secs: float):
        """``pending_secs``: a claim not answered after this long (longer than any deadline)
        belonged to a process that died; it is free again."""
        self.path = path
        self.keep_secs = keep_secs
        self.pending_secs = pending_secs
        self._local = threading.local()
        with self._connection() as db:
            db.execute(_SCHEMA)

    def _connection(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:  # one connection per thread; WAL lets readers and one writer overlap
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            self._local.db = db
        return db

    def claim(self, request_id: str, digest: str) -> Claim:
        """Claim ``request_id`` for a payload, or say who has it."""
        db = self._connection()
        now = time.time()
        db.execute("BEGIN IMMEDIATE")
        try:
            # An expired answer, or a claim whose process died without answering, is free.
            db.execute("DELETE FROM claims WHERE request_id = ? AND (claimed_at < ? OR "
                       "(status IS NULL AND claimed_at < ?))",
                       (request_id, now - self.keep_secs, now - self.pending_secs))
            inserted = db.execute(
                "INSERT INTO claims (request_id, digest, claimed_at) VALUES (?, ?, ?) "
                "ON CONFLICT (request_id) DO NOTHING", (request_id, digest, now)).rowcount
            row = None if inserted else db.execute(
                "SELECT digest, status, body FROM claims WHERE request_id = ?",
                (request_id,)).fetchone()
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        if inserted:
            return Claim(mine=True)
        stored_digest, status, body = row
        if stored_digest != digest:
            return Claim(conflict=True)
        if status is None:
            return Claim(busy=True)
        return Claim(answer=(status, json.loads(body)))

    def settle(self, request_id: str, status: int, body: dict) -> None:
        """Keep a final answer for replay, or release the claim of one that is not final."""
        db = self._connection()
        if status in FINAL:
            db.execute("UPDATE claims SET status = ?, body = ? WHERE request_id = ?",
                       (status, json.dumps(body), request_id))
        else:
            db.execute("DELETE FROM claims WHERE request_id = ? AND status IS NULL",
                       (request_id,))


# Release a claim only while it is still pending (never an answer another call settled).
_RELEASE = """
local value = redis.call('GET', KEYS[1])
if value and cjson.decode(value)['status'] == cjson.null then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class RedisClaimStore(_Waiting):
    """Claims and final answers by request id in Redis: ``SET NX`` with the pending time as
    expiry claims, an answer replaces it with the keeping time as expiry."""

    PREFIX = "beamline:offers:claim:"

    def __init__(self, url: str, keep_secs: float, pending_secs: float):
        try:
            import redis
        except ImportError:
            raise ValueError("an idempotency store in Redis needs the redis package (pip "
                             "install redis)") from None
        self.path = url
        self.keep_ms = int(keep_secs * 1000)
        self.pending_ms = int(pending_secs * 1000)
        self._client = redis.Redis.from_url(url)
        try:
            self._client.ping()
        except redis.RedisError as error:
            raise ValueError(f"the idempotency store {url} does not answer: {error}") from None
        self._release = self._client.register_script(_RELEASE)

    def claim(self, request_id: str, digest: str) -> Claim:
        key = self.PREFIX + request_id
        if self._client.set(key, json.dumps({"digest": digest, "status": None}), nx=True,
                            px=self.pending_ms):
            return Claim(mine=True)
        value = self._client.get(key)
        if value is None:  # released or expired a moment ago: try again
            return self.claim(request_id, digest)
        stored = json.loads(value)
        if stored["digest"] != digest:
            return Claim(conflict=True)
        if stored["status"] is None:
            return Claim(busy=True)
        return Claim(answer=(stored["status"], stored["body"]))

    def settle(self, request_id: str, status: int, body: dict) -> None:
        key = self.PREFIX + request_id
        if status in FINAL:
            value = self._client.get(key)
            digest = json.loads(value)["digest"] if value else None
            if digest is not None:
                self._client.set(key, json.dumps({"digest": digest, "status": status,
                                                  "body": body}), px=self.keep_ms)
        else:
            self._release(keys=[key])
