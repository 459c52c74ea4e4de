"""Provenance facts recorded on models and predictions: hashes, code and library versions."""

import functools
import hashlib
import importlib.metadata
import pathlib
import subprocess

PROJECT_ROOT = pathlib.Path(__file__).resolve().parent.parent
LIBRARIES = ("apache-beam", "tensorflow", "keras", "numpy", "pyarrow")


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of a byte string."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks so large files stay out of memory."""
    from apache_beam.io.filesystems import FileSystems

    digest = hashlib.sha256()
    with FileSystems.open(path) as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@functools.cache
def code_version() -> str:
    """The package version plus the git commit when run from a checkout.

    A dirty work tree is marked "+dirty" so a prediction made from uncommitted code is never
    mistaken for one made from the commit. Computed once at graph construction and passed to
    workers as a value, because workers run from a staged package without .git.
    """
    try:
        version = importlib.metadata.version("beamline")
    except importlib.metadata.PackageNotFoundError:
        version = "0+unknown"
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],
            cwd=PROJECT_ROOT, capture_output=True, text=True, check=True, timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=PROJECT_ROOT, capture_output=True, text=True, check=True, timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return version
    return f"{version}+g{commit}{'.dirty' if dirty else ''}"


def library_versions() -> dict[str, str]:
    """Installed versions of the libraries that decide a model's behaviour."""
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def new_run_id(prefix: str) -> str:
    """A fresh run id, ``<prefix>-<UTC time>-<random>``: the one place run ids are minted
    (pipelines, the evaluation, the offers API), so every id sorts by time and names its kind."""
    import datetime
    import uuid

    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{prefix}-{stamp}-{uuid.uuid4().hex[:6]}"
