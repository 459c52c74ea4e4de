"""The audit trail of a model's alias moves: one write-once record per move, hash-chained.

Records live in ``<registry>/<model>/aliases/audit/<seq>.json`` (``00000001.json``, ...). Each
names the record before it and carries the sha256 of that record's bytes, so a record that is
deleted, edited or put in twice breaks the chain at a place the check names; the alias file
names the record that moved it (and its sha256), so a deleted last record shows too.

A move is: take the model's alias lock, write the next record (created exclusively, fsynced),
then replace the alias file. If the record cannot be written nothing moves. Beam's FileSystems
has neither append nor lock, so moves are serialised with ``fcntl.flock`` on a lock file and run
only on a local (or mounted) registry; on object storage the move is refused in words
(docs/operations.md says why and what a conditional write would take). Reading the trail works
on every filesystem Beam knows.
"""

import contextlib
import dataclasses
import datetime
import hashlib
import json
import os
import time

from apache_beam.io.filesystems import FileSystems

RECORDS = "audit"
LOCK = ".lock"
LOCK_WAIT_S = 60.0
_FIELDS = ("seq", "time", "alias", "from", "to", "by", "reason", "decision", "previous",
           "previous_sha256")


class AuditError(Exception):
    """A move that cannot be recorded (so it is not made)."""


@dataclasses.dataclass(frozen=True)
class Trail:
    """What the audit folder holds.

    Attributes:
        moves: the readable records, oldest first.
        problems: damaged, missing, edited or unrecorded moves, each naming its file.
    """

    moves: list[dict]
    problems: list[str]


def record_name(seq: int) -> str:
    return f"{seq:08d}.json"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _read(path: str) -> bytes | None:
    try:
        with FileSystems.open(path) as f:
            return f.read()
    except OSError:
        return None


def _record_files(folder: str) -> dict[int, str]:
    """seq -> path of every file named like a record."""
    try:
        matches = FileSystems.match([FileSystems.join(folder, RECORDS, "*.json")])[0]
    except Exception:  # noqa: BLE001 - no audit folder yet matches nothing
        return {}
    files = {}
    for metadata in matches.metadata_list:
        stem = metadata.path.replace("\\", "/").rsplit("/", 1)[-1][:-len(".json")]
        if len(stem) == 8 and stem.isascii() and stem.isdigit():
            files[int(stem)] = metadata.path
    return files


def read_trail(folder: str, aliases: dict[str, dict] | None = None) -> Trail:
    """Every record of an aliases folder, with the chain checked.

    Args:
        folder: ``<registry>/<model>/aliases``.
        aliases: alias name -> its alias file's content, to check each names the record that
            moved it.
    """
    moves, problems = [], []
    files = _record_files(folder)
    previous_name, previous_sha = None, None
    expected = 1
    for seq in sorted(files):
        name = record_name(seq)
        if seq != expected:
            missing = record_name(expected) + ("" if seq == expected + 1 else
                                               f" to {record_name(seq - 1)}")
            problems.append(f"audit record {missing} missing (deleted?): the chain jumps from "
                            f"{previous_name or 'its start'} to {name}")
        data = _read(files[seq])
        sha = _sha256(data) if data is not None else None
        try:
            record = json.loads(data.decode("utf-8"))
            if not isinstance(record, dict) or not set(_FIELDS) <= record.keys():
                raise ValueError("fields missing")
        except (AttributeError, ValueError):
            problems.append(f"audit record {name} is damaged (not a move record)")
        else:
            if record["seq"] != seq:
                problems.append(f"audit record {name} says it is record {record['seq']!r}")
            if seq == expected and (record["previous"], record["previous_sha256"]) != \
                    (previous_name, previous_sha):
                problems.append(f"audit record {name} does not chain to "
                                f"{previous_name or 'the start'}: "
                                f"{previous_name or 'a record before it'} was edited or "
                                f"replaced, or {name} was")
            moves.append(record)
        previous_name, previous_sha, expected = name, sha, seq + 1
    last_move = {m["alias"]: record_name(m["seq"]) for m in moves if isinstance(m["seq"], int)}
    for alias, content in sorted((aliases or {}).items()):
        recorded = content.get("record") if isinstance(content, dict) else None
        if recorded is not None and alias in last_move and last_move[alias] != recorded:
            problems.append(f"alias {alias} names audit record {recorded}, but its last move "
                            f"is {last_move[alias]} (a move that did not complete, or an alias "
                            f"file put back by hand)")
        path = files.get(int(recorded[:8])) if isinstance(recorded, str) and \
            recorded[:8].isdigit() else None
        if recorded is None:
            problems.append(f"alias {alias} names no audit record: it was moved outside the "
                            f"audit trail")
        elif path is None:
            problems.append(f"alias {alias} was moved by audit record {recorded}, which is "
                            f"missing (deleted?)")
        elif _sha256(_read(path) or b"") != content.get("record_sha256"):
            problems.append(f"alias {alias}: audit record {recorded} is not the one that "
                            f"moved it (edited?)")
    return Trail(moves=moves, problems=problems)


def aliases_at(moves: list[dict], when: datetime.datetime) -> dict[str, dict]:
    """Where each alias pointed at ``when`` (an aware datetime), from the audit records.

    Returns:
        alias -> the record of the last move at or before ``when`` (``to`` is the version,
        ``time`` since when); an alias first moved later is absent. Records are taken in
        sequence order, so a clock stepping back between two moves cannot reorder them.
    """
    found: dict[str, dict] = {}
    for record in sorted(moves, key=lambda r: r["seq"]):
        try:
            moved = datetime.datetime.fromisoformat(record["time"])
        except (TypeError, ValueError):
            continue  # read_trail reports a record it cannot read; it decides nothing here
        if moved.tzinfo is None:
            moved = moved.replace(tzinfo=datetime.UTC)
        if moved <= when:
            found[record["alias"]] = record
    return found


def is_local(path: str) -> bool:
    return FileSystems.get_scheme(path) is None


@contextlib.contextmanager
def move_lock(folder: str):
    """Hold the model's alias lock (``fcntl.flock`` on ``<folder>/.lock``).

    Raises:
        AuditError: the registry is not local, or the lock cannot be had within a minute.
    """
    import fcntl

    if not is_local(folder):
        scheme = FileSystems.get_scheme(folder)
        raise AuditError(
            f"alias moves are serialised with a file lock, which {scheme}:// does not offer; "
            f"move aliases on a local or mounted copy of the registry (docs/operations.md)")
    try:
        os.makedirs(folder, exist_ok=True)
        descriptor = os.open(os.path.join(folder, LOCK), os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as error:
        raise AuditError(f"the alias lock in {folder} cannot be opened "
                         f"({error.strerror or error})") from None
    try:
        deadline = time.monotonic() + LOCK_WAIT_S
        while True:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise AuditError(f"another alias move has held {folder}/{LOCK} for "
                                     f"{LOCK_WAIT_S:.0f} s; try again") from None
                time.sleep(0.005)
        yield
    finally:
        os.close(descriptor)  # releases the lock


def _write_new(path: str, data: bytes) -> None:
    """Create ``path`` (never replacing one), its bytes and its name on disk before returning."""
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)
    try:
        os.write(descriptor, data)
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
    _fsync_directory(directory)


def _fsync_directory(directory: str) -> None:
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _replace(path: str, data: bytes) -> None:
    """Replace ``path`` atomically (readers see the old or the new file, never none)."""
    temporary = f"{path}.{os.getpid()}.tmp"
    with open(temporary, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temporary, path)
    _fsync_directory(os.path.dirname(path))


def move(folder: str, alias: str, version: str, by: str, reason: str,
         decision: str | None) -> dict:
    """Record a move of ``alias`` to ``version``, then make it.

    Returns:
        The record written.

    Raises:
        AuditError: the record cannot be written (nothing moved) or the lock cannot be had.
    """
    alias_path = os.path.join(folder, f"{alias}.json")
    with move_lock(folder):
        try:
            with open(alias_path, "rb") as f:
                before = json.loads(f.read().decode("utf-8"))
        except (OSError, ValueError):
            before = None
        files = _record_files(folder)
        last = max(files, default=0)
        last_data = _read(files[last]) if last else None
        now = datetime.datetime.now(datetime.UTC).isoformat()
        record = {"seq": last + 1, "time": now, "alias": alias,
                  "from": before.get("version") if isinstance(before, dict) else None,
                  "to": version, "by": by, "reason": reason, "decision": decision,
                  "previous": record_name(last) if last else None,
                  "previous_sha256": _sha256(last_data) if last_data is not None else None}
        data = (json.dumps(record, indent=1, sort_keys=True) + "\n").encode("utf-8")
        name = record_name(last + 1)
        try:
            _write_new(os.path.join(folder, RECORDS, name), data)
        except OSError as error:
            raise AuditError(
                f"the audit record {os.path.join(folder, RECORDS, name)} cannot be written "
                f"({error.strerror or error}); {alias} was not moved") from None
        pointer = {"alias": alias, "version": version, "set_at": now, "by": by,
                   "reason": reason, "decision": decision, "record": name,
                   "record_sha256": _sha256(data)}
        try:
            _replace(alias_path, json.dumps(pointer, indent=2).encode("utf-8"))
        except OSError as error:
            raise AuditError(f"audit record {name} was written but {alias_path} cannot be "
                             f"replaced ({error.strerror or error}); {alias} was not moved "
                             f"(the chain check will name the record)") from None
    return record
