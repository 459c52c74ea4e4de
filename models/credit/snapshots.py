"""Training snapshots: the labelled production rows an evaluation joined, kept in the registry
so a model can be retrained on the population it now serves.

Layout: ``<registry>/<model>/snapshots/<snapshot id>/`` with Parquet files (one row per
labelled sampled prediction: prediction_id, event_time, model_version, label, label_time and the
data set's input fields) and ``manifest.json`` (row counts per model version and week, time
range, sha256 of every file, the evaluation run it came from, and how many sampled predictions
had no label yet: only rows whose outcome is known can be labels, so the snapshot leans towards
the applicants whose outcome arrives first).
"""

import datetime
import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from models.credit.dataset import NUMERIC, Dataset
from models.credit.event_times import DEFAULT_WINDOW
from models.provenance import sha256_file

SNAPSHOTS = "snapshots"
MANIFEST = "manifest.json"
TIMESTAMP = pa.timestamp("us", tz="UTC")


class SnapshotError(ValueError):
    """A snapshot that is missing, incomplete or does not fit the data set."""


def snapshot_dir(registry: str, model_name: str, snapshot_id: str) -> str:
    return FileSystems.join(registry, model_name, SNAPSHOTS, snapshot_id)


def snapshot_schema(kinds: dict[str, str]) -> pa.Schema:
    """Columns of a snapshot file: identity, label and the data set's input fields."""
    return pa.schema([
        pa.field("prediction_id", pa.string()), pa.field("event_time", TIMESTAMP),
        pa.field("model_version", pa.string()), pa.field("label", pa.int64()),
        pa.field("label_time", TIMESTAMP), pa.field("week", pa.string()),
        *(pa.field(name, pa.float64() if kind == NUMERIC else pa.string())
          for name, kind in kinds.items())])


def week_of(event_time: datetime.datetime) -> str:
    day = event_time.astimezone(datetime.UTC).date()
    return (day - datetime.timedelta(days=day.weekday())).isoformat()


def write_manifest(registry: str, model_name: str, snapshot_id: str, evaluation_run: str,
                   unlabelled: int) -> dict | None:
    """Describe a snapshot's files once they are written; None when it has no rows."""
    folder = snapshot_dir(registry, model_name, snapshot_id)
    try:
        files = sorted(m.path for m in FileSystems.match(
            [FileSystems.join(folder, "*.parquet")])[0].metadata_list)
    except Exception:  # noqa: BLE001 - nothing written matches nothing
        files = []
    if not files:
        return None
    counts: dict[str, dict[str, int]] = {}
    times = []
    for path in files:
        with FileSystems.open(path) as f:
            table = pq.read_table(f, columns=["model_version", "week", "event_time"])
        for version, week in zip(table.column("model_version").to_pylist(),
                                 table.column("week").to_pylist()):
            counts.setdefault(version, {}).setdefault(week, 0)
            counts[version][week] += 1
        times.extend(table.column("event_time").to_pylist())
    manifest = {
        "snapshot_id": snapshot_id, "model_name": model_name,
        "created_at": datetime.datetime.now(datetime.UTC).isoformat(),
        "evaluation_run_id": evaluation_run,
        "rows": sum(sum(w.values()) for w in counts.values()),
        "rows_by_model_version_and_week": counts,
        "event_time_range": [min(times).isoformat(), max(times).isoformat()],
        "sampled_predictions_without_label": unlabelled,
        "files": {path.rsplit("/", 1)[-1]: sha256_file(path) for path in files},
    }
    with FileSystems.create(FileSystems.join(folder, MANIFEST)) as f:
        f.write(json.dumps(manifest, indent=2).encode("utf-8"))
    return manifest


def list_snapshots(registry: str, model_name: str) -> list[str]:
    """Complete snapshots (those with a manifest), oldest first."""
    pattern = FileSystems.join(registry, model_name, SNAPSHOTS, "*", MANIFEST)
    try:
        paths = [m.path for m in FileSystems.match([pattern])[0].metadata_list]
    except Exception:  # noqa: BLE001 - a missing folder matches nothing
        return []
    return sorted(p.replace("\\", "/").rsplit("/", 2)[-2] for p in paths)


def read_manifest(registry: str, model_name: str, snapshot_id: str) -> dict:
    """A complete snapshot's manifest.

    Raises:
        SnapshotError: no such complete snapshot (the message lists those there are).
    """
    path = FileSystems.join(snapshot_dir(registry, model_name, snapshot_id), MANIFEST)
    try:
        with FileSystems.open(path) as f:
            return json.loads(f.read().decode("utf-8"))
    except OSError:
        known = ", ".join(list_snapshots(registry, model_name)) or "none"
        raise SnapshotError(f"no complete snapshot {snapshot_id!r} of {model_name} in "
                            f"{registry}; have: {known}") from None


def snapshot_files(registry: str, model_name: str, snapshot_id: str) -> list[tuple[str, str]]:
    """(path, sha256 its manifest records) of every file of a snapshot."""
    folder = snapshot_dir(registry, model_name, snapshot_id)
    manifest = read_manifest(registry, model_name, snapshot_id)
    return [(FileSystems.join(folder, name), digest)
            for name, digest in sorted(manifest["files"].items())]


def read_file_rows(file: tuple[str, str], field_names, since: datetime.datetime | None = None,
                   until: datetime.datetime | None = None) -> list[dict]:
    """The rows of one snapshot file within [since, until), after checking its sha256.

    Raises:
        SnapshotError: the file changed since it was written, or lacks input fields.
    """
    path, digest = file
    if sha256_file(path) != digest:
        raise SnapshotError(f"{path} has changed since its snapshot was written")
    with FileSystems.open(path) as f:
        table = pq.read_table(f)
    missing = sorted(set(field_names) - set(table.schema.names))
    if missing:
        raise SnapshotError(f"{path} lacks the input fields {missing}")
    _check_event_times(path, table)
    return [row for row in table.to_pylist()
            if not (since and row["event_time"] < since)
            and not (until and row["event_time"] >= until)]


def _check_event_times(path: str, table: pa.Table) -> None:
    """Refuse a snapshot file holding event times no run accepts (the request window's
    bounds, with the file's write time as "received"): such rows would weigh as years old."""
    times = table.column("event_time")
    if not len(times):
        return
    now = datetime.datetime.now(datetime.UTC)
    low, high = pc.min(times).as_py(), pc.max(times).as_py()
    for edge in (low, high):
        problem = DEFAULT_WINDOW.problem(edge, now)
        if problem:
            rows = [i + 1 for i, t in enumerate(times.to_pylist()) if t == edge][:5]
            raise SnapshotError(f"{path}: {'row' if len(rows) == 1 else 'rows'} "
                                f"{', '.join(map(str, rows))}: {problem}; the "
                                f"snapshot is refused for training")


def read_snapshot(registry: str, model_name: str, snapshot_id: str, dataset: Dataset,
                  since: datetime.datetime | None = None,
                  until: datetime.datetime | None = None) -> tuple[list[dict], dict]:
    """The rows of one snapshot within [since, until), checked against its manifest.

    Returns:
        (rows as dicts with the data set's fields, label and event_time; the manifest).

    Raises:
        SnapshotError: no manifest, a file whose sha256 differs, or fields the data set lacks.
    """
    manifest = read_manifest(registry, model_name, snapshot_id)
    rows = [row for file in snapshot_files(registry, model_name, snapshot_id)
            for row in read_file_rows(file, dataset.field_names, since, until)]
    return rows, manifest


def recency_weights(times: list[datetime.datetime], half_life_days: float | None,
                    scale: float = 1.0) -> np.ndarray:
    """``scale`` halved for every ``half_life_days`` a row is older than the newest one (all
    ``scale`` without a half-life)."""
    if not times:
        return np.zeros(0)
    if not half_life_days:
        return np.full(len(times), scale)
    newest = max(times)
    ages = np.asarray([(newest - t).total_seconds() / 86400.0 for t in times])
    return scale * np.power(0.5, ages / half_life_days)
