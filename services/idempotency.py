"""Idempotent answers of the offers API: one atomic claim per request id, in SQLite.

A request id is claimed by inserting its row (``INSERT ... ON CONFLICT DO NOTHING`` in one
transaction), so of concurrent duplicates exactly one goes on to score and call the bank; the
others wait for its answer (up to their deadline) and get it back. The file lives beside the
outputs, so a restart keeps every claim and answer.

Which outcomes are final (kept and replayed for ``--idempotency_secs``): a 200 answer
(offered, no bank, declined, referred); the same id with another payload is then a 409. Not
final (the claim is released and a retry does it again): 502 and 504 (the bank failed or the
deadline passed: a retry with a longer deadline may succeed, and the bank's own idempotency
key, the prediction id, keeps it from pricing twice), 503, and a 400 (the same body is
refused the same way anyway). One SQLite file serves the processes of one machine; several
machines behind a balancer need a shared store (Redis with ``SET NX``), which is not built.
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


class ClaimStore:
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

    def wait(self, request_id: str, digest: str, seconds: float) -> Claim:
        """Poll a busy claim until it is answered, released (then it is ours) or time is up."""
        deadline = time.monotonic() + seconds
        while True:
            claim = self.claim(request_id, digest)
            if not claim.busy or time.monotonic() >= deadline:
                return claim
            time.sleep(0.01)

    def settle(self, request_id: str, status: int, body: dict) -> None:
        """Keep a final answer for replay, or release the claim of one that is not final."""
        db = self._connection()
        if status in FINAL:
            db.execute("UPDATE claims SET status = ?, body = ? WHERE request_id = ?",
                       (status, json.dumps(body), request_id))
        else:
            db.execute("DELETE FROM claims WHERE request_id = ? AND status IS NULL",
                       (request_id,))
