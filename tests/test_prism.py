"""Beam's Prism runner built by set-up: runs that ask for it get the built binary, and a
streaming credit run on it writes rows while it is still running."""

import glob
import os
import subprocess
import sys
import time

import pytest

from runners import prism
from tests.conftest import write_jsonl


def test_runs_that_ask_for_prism_get_the_built_binary_or_a_clear_refusal(tmp_path,
                                                                        monkeypatch):
    monkeypatch.setenv("BEAMLINE_HOME", str(tmp_path))
    assert prism.with_prism(["--input", "x"]) == (["--input", "x"], None)
    with pytest.raises(ValueError, match="--runner PrismRunner: no Prism v.* is built at .*; "
                                         "run `beamline setup` \\(it needs Go\\)"):
        prism.with_prism(["--runner", "PrismRunner"])
    given = ["--runner=PrismRunner", "--prism_location", "/opt/prism"]
    assert prism.with_prism(given)[0] == given
    binary = prism.prism_binary()
    binary.parent.mkdir(parents=True)
    binary.write_text("")
    argv, note = prism.with_prism(["--runner", "PrismRunner"])
    assert argv[-2:] == ["--prism_location", str(binary)] and "built by set-up" in note
    monkeypatch.setenv("PATH", str(tmp_path / "no-go-here"))
    binary.unlink()
    assert prism.build() == (None, "Go is not installed: no Prism runner (streaming runs on "
                                   "the local DirectRunner); install Go and run `beamline "
                                   "setup` again")


@pytest.fixture(scope="session")
def prism_location() -> str:
    """The Prism of the installed Beam, built once (minutes the first time) where set-up
    builds it."""
    binary, said = prism.build()
    if binary is None:
        pytest.skip(said)
    return str(binary)


@pytest.mark.slow
def test_a_streaming_run_on_prism_writes_rows_while_it_runs(prism_location, credit_registry,
                                                            make_requests, tmp_path):
    landing, out = tmp_path / "landing", tmp_path / "out"
    landing.mkdir()
    job = subprocess.Popen(
        [sys.executable, "-m", "pipelines.credit_scoring", "--streaming", "--input_dir",
         str(landing), "--registry", credit_registry, "--output", str(out), "--sample_rate",
         "1", "--window_secs", "5", "--stop_after_secs", "45", "--runner", "PrismRunner",
         "--prism_location", prism_location], stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True)
    try:
        time.sleep(15)  # the job is up and watching
        write_jsonl(landing / "a.jsonl", make_requests(100, "prism"))
        landed, seen = time.monotonic(), None
        while time.monotonic() - landed < 25 and job.poll() is None:
            if glob.glob(f"{out}/responses/**/*.parquet", recursive=True):
                seen = time.monotonic() - landed
                break
            time.sleep(0.5)
        running = job.poll() is None
        output, _ = job.communicate(timeout=120)
    finally:
        if job.poll() is None:
            job.kill()
    assert job.returncode == 0, output[-3000:]
    assert seen is not None and running, output[-3000:]
    print(f"\nprism: responses in Parquet {seen:.1f} s after the file landed, job running")
    assert "launch: runner PrismRunner" in output
    assert "rows written: predictions 100, responses 100" in output
    assert not os.path.exists(out / "dead_letters") or not glob.glob(
        f"{out}/dead_letters/**/*.parquet", recursive=True)
