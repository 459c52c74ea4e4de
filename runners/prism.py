"""Beam's Prism runner, built from source by set-up, so local streaming runs on a portable
runner without downloading anything at run time.

Beam's ``PrismRunner`` downloads a Prism binary from GitHub unless ``--prism_location`` names
one; for a released Beam its own source build is not offered. Prism is a Go module of the Beam
repository, so ``beamline setup`` builds the one of the installed Beam's version with ``go
install`` into a folder the project owns, ``<BEAMLINE_HOME or the project>/.cache/prism/
v<version>/prism``, and ``with_prism`` gives every ``--runner PrismRunner`` run that binary.
Without Go, set-up says so in one line and runs stay on the local DirectRunner.
"""

import importlib.metadata
import os
import pathlib
import shutil
import subprocess

from models.provenance import PROJECT_ROOT

MODULE = "github.com/apache/beam/sdks/v2/go/cmd/prism"
RUNNER_NAMES = ("PrismRunner", "apache_beam.runners.portability.prism_runner.PrismRunner")
BUILD_TIMEOUT_SECS = 1800


def beam_version() -> str:
    """The installed Beam's version (read without importing Beam: set-up stays quiet)."""
    return importlib.metadata.version("apache-beam")


def prism_binary(version: str | None = None) -> pathlib.Path:
    """Where set-up puts the Prism of a Beam version."""
    home = pathlib.Path(os.environ.get("BEAMLINE_HOME") or PROJECT_ROOT)
    return home / ".cache" / "prism" / f"v{version or beam_version()}" / "prism"


def build(version: str | None = None) -> tuple[pathlib.Path | None, str]:
    """Build Prism for the installed Beam unless it is there: (the binary or None, what
    happened in words)."""
    version = version or beam_version()
    binary = prism_binary(version)
    if binary.exists():
        return binary, f"Prism v{version} at {binary}"
    go = shutil.which("go")
    if go is None:
        return None, ("Go is not installed: no Prism runner (streaming runs on the local "
                      "DirectRunner); install Go and run `beamline setup` again")
    binary.parent.mkdir(parents=True, exist_ok=True)
    try:
        done = subprocess.run([go, "install", f"{MODULE}@v{version}"], capture_output=True,
                              text=True, timeout=BUILD_TIMEOUT_SECS,
                              env={**os.environ, "GOBIN": str(binary.parent)})
    except subprocess.TimeoutExpired:
        return None, f"building Prism v{version} took over {BUILD_TIMEOUT_SECS} s: stopped"
    if done.returncode != 0 or not binary.exists():
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return None, f"building Prism v{version} with `go install {MODULE}` failed: {last}"
    return binary, f"built Prism v{version} at {binary}"


def wants_prism(argv: list[str]) -> bool:
    for i, word in enumerate(argv):
        runner = word.partition("=")[2] if word.startswith("--runner=") else (
            argv[i + 1] if word == "--runner" and i + 1 < len(argv) else None)
        if runner in RUNNER_NAMES:
            return True
    return False


def with_prism(argv: list[str]) -> tuple[list[str], str | None]:
    """``argv`` with ``--prism_location`` of the built binary when it asks for the Prism
    runner without naming one, and the launch note naming runner and version.

    Raises:
        ValueError: Prism is asked for and none is built (Beam would try to download one).
    """
    if not wants_prism(argv):
        return argv, None
    if any(w == "--prism_location" or w.startswith("--prism_location=") for w in argv):
        return argv, "runner PrismRunner (the --prism_location given)"
    binary = prism_binary()
    if not binary.exists():
        raise ValueError(f"--runner PrismRunner: no Prism v{beam_version()} is built at "
                         f"{binary}; run `beamline setup` (it needs Go) or give "
                         f"--prism_location")
    return [*argv, "--prism_location", str(binary)], (
        f"runner PrismRunner, Prism v{beam_version()} built by set-up ({binary})")
