"""Faults around the pipelines stop a run with one clear line and leave nothing half done.

Outputs that cannot be written: a read-only folder (refused at start, before any input is
read) and a disk that fills up mid-run (a real size-limited tmpfs, where this machine lets the
test mount one). Models that cannot be trusted: a truncated model file, an unreadable
manifest, a SavedModel export file changed after publishing, each refused naming the version.
"""

import contextlib
import json
import os
import re
import shutil
import subprocess

import pyarrow.compute as pc
import pytest

from models import registry as model_registry
from pipelines import credit_scoring
from pipelines.launch import check_output_writable, cli
from tests.conftest import write_jsonl

pytestmark = pytest.mark.slow


@contextlib.contextmanager
def tmpfs(path, size: str, read_only: bool = False):
    """A tmpfs of ``size`` mounted at ``path`` (skips the test where mounting is not allowed)."""
    os.makedirs(path, exist_ok=True)
    options = f"size={size}" + (",ro" if read_only else "")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip()}): needs root")
    try:
        yield path
    finally:
        # Lazy: a worker thread of the failed run may still hold a handle for a moment.
        subprocess.run(["umount", "-l", str(path)], check=True)


def files_under(path) -> list[str]:
    return [os.path.join(d, f) for d, _, fs in os.walk(path) for f in fs]


def test_a_read_only_output_is_refused_at_start(credit_registry, tmp_path, make_requests,
                                                capsys):
    requests = write_jsonl(tmp_path / "requests.jsonl", make_requests(10))
    with tmpfs(tmp_path / "ro", "1m", read_only=True) as folder:
        status = cli(credit_scoring.run, ["--registry", credit_registry, "--input", requests,
                                          "--output", str(folder / "out")])
        assert files_under(folder) == []
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2
    assert err[-1] == (f"error: output folder {folder / 'out'} cannot be written: "
                       f"Read-only file system (EROFS)")


def test_a_folder_that_is_a_file_is_refused_in_words(tmp_path):
    (tmp_path / "taken").write_text("not a folder")
    with pytest.raises(OSError, match=r"cannot be written: Not a directory \(ENOTDIR\)|"
                                      r"cannot be written: File exists \(EEXIST\)"):
        check_output_writable(str(tmp_path / "taken" / "out"), "r1")


def test_a_disk_that_fills_stops_the_run_and_leaves_no_file(credit_registry, tmp_path,
                                                            make_requests, capsys):
    requests = write_jsonl(tmp_path / "requests.jsonl", make_requests(6000, "full"))
    with tmpfs(tmp_path / "small", "256k") as folder:
        status = cli(credit_scoring.run, [
            "--registry", credit_registry, "--input", requests, "--output", str(folder / "out"),
            "--sample_rate", "1.0", "--run_id", "full-disk"])
        left = files_under(folder)
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert status == 2
    assert err.startswith(f"error: writing under {folder / 'out'} failed: No space left on "
                          f"device (ENOSPC); run full-disk stopped and the ")
    assert err.endswith("so running it again after freeing space does not double any row")
    # Neither finished nor temporary files of the run are left, hidden or not.
    assert left == []


def _copy_registry(credit_registry, tmp_path) -> str:
    copy = str(tmp_path / "registry")
    shutil.copytree(credit_registry, copy)
    return copy


@pytest.mark.parametrize("damage, message", [
    ("truncate", r"model credit_german v0001: .*model.keras has sha256 \w{12}\.\.\., its "
                 r"manifest says \w{12}\.\.\.: the file is corrupt, truncated or replaced; "
                 r"refusing to serve it"),
    ("manifest", r"model credit_german v0001: its manifest manifest.json is unreadable "
                 r"\(JSONDecodeError: .*\); refusing to serve it"),
    ("missing", r"model credit_german v0001: its model file .*model.keras cannot be read "
                r"\(No such file or directory\); refusing to serve it"),
])
def test_a_damaged_model_is_refused_naming_the_version(credit_registry, tmp_path,
                                                        make_requests, capsys, damage, message):
    registry = _copy_registry(credit_registry, tmp_path)
    folder = os.path.join(registry, "credit_german", "v0001")
    if damage == "truncate":
        with open(os.path.join(folder, "model.keras"), "r+b") as f:
            f.truncate(os.path.getsize(f.name) // 2)
    elif damage == "manifest":
        with open(os.path.join(folder, "manifest.json"), "w") as f:
            f.write('{"name": "credit_german", "version"')
    else:
        os.remove(os.path.join(folder, "model.keras"))
    requests = write_jsonl(tmp_path / "requests.jsonl", make_requests(5))
    status = cli(credit_scoring.run, ["--registry", registry, "--input", requests,
                                      "--output", str(tmp_path / "out"),
                                      "--model_version", "v0001"])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert status == 2
    assert re.fullmatch("error: " + message, err), err
    assert not os.path.exists(tmp_path / "out")


def test_a_changed_savedmodel_file_is_refused_by_the_serving_function(credit_registry,
                                                                       tmp_path):
    from services.model_server import ServedVersion, ServingError

    registry = _copy_registry(credit_registry, tmp_path)
    ref = model_registry.resolve(registry, "credit_german", "v0001")
    export = ref.manifest["exports"]["saved_model"]
    name = next(n for n in export["files"] if n.startswith("variables/"))
    path = os.path.join(os.path.dirname(ref.path), export["path"], name)
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) - 1)
    with pytest.raises(ServingError, match=f"credit_german v0001: export file {name} does "
                                           f"not match its manifest"):
        ServedVersion(ref)


def test_a_chaotic_offer_api_ends_every_request_once_within_the_attempt_bound(
        credit_registry, tmp_path, make_requests, offer_service):
    """Half the calls fail in every way a gateway fails; each quote is tried at most
    retries + 1 times, so a run takes at most (retries + 1) x timeout + backoff per call."""
    import pyarrow.dataset as ds

    from services.bank_offers import CHAOS_FAIL_RATE, CHAOS_KINDS

    requests = make_requests(300, "chaos")
    service = offer_service(fail_rate=CHAOS_FAIL_RATE, fail_kinds=CHAOS_KINDS, hang_secs=0.6,
                            seed=5)
    retries = 3
    credit_scoring.run([
        "--registry", credit_registry, "--input",
        write_jsonl(tmp_path / "requests.jsonl", requests), "--output", str(tmp_path / "out"),
        "--offer_url", service.url, "--offer_timeout_secs", "0.3", "--offer_retries",
        str(retries), "--offer_batch_size", "10"])
    responses = ds.dataset(tmp_path / "out" / "responses", partitioning="hive").to_table()
    dead_folder = tmp_path / "out" / "dead_letters"
    dead = (ds.dataset(dead_folder, partitioning="hive").to_table().to_pylist()
            if dead_folder.exists() else [])
    answered = responses.column("request_id").to_pylist()
    failed = [json.loads(d["raw"])["request_id"] for d in dead]
    assert sorted(answered + failed) == sorted(r["request_id"] for r in requests)
    assert {d["stage"] for d in dead} <= {"offer"}
    stats = service.stats()
    assert len({k for k in CHAOS_KINDS if stats.get(f"failed_{k}")}) >= 5, stats
    assert 1 < stats["max_calls_per_quote"] <= retries + 1
    # Retries got answers through; a lost answer was replayed on retry, never priced twice:
    # at most one quote per request that was asked for one.
    offered = responses.filter(pc.equal(responses["offer_status"], "offered"))
    assert offered.num_rows > 0 and stats.get("replayed", 0) > 0
    assert stats["quotes_created"] <= offered.num_rows + len(failed)
    assert len(set(offered.column("offer_id").to_pylist())) == offered.num_rows
