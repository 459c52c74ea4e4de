"""Beam's Flink job server fetched by set-up (runners.flink): what set-up says without Java or
Maven, the record it keeps, and the job server's command line; the streaming pipelines on an
embedded Flink mini cluster. The batch pipelines on Flink are in tests/test_runners.py (outputs
equal to the DirectRunner's)."""

import json

import pyarrow.dataset as ds
import pytest

from runners import flink as job_server
from tests.conftest import (
    check_sweeps_ahead_of_volume,
    stream_job,
    stream_klot_chunks,
    write_jsonl,
)


def read_rows(path) -> list[dict]:
    if not path.exists():
        return []
    return ds.dataset(str(path), partitioning="hive").to_table().to_pylist()


def test_without_java_or_maven_set_up_says_so_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("BEAMLINE_HOME", str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path / "nothing-here"))
    record, said = job_server.fetch()
    assert record is None
    assert said == ("java and mvn not installed: no Flink job server (the Flink tests skip); "
                    "install a JDK 17 and Maven and run `beamline setup` again")


def test_a_fetched_job_server_is_found_with_both_beam_versions_named(tmp_path, monkeypatch):
    monkeypatch.setenv("BEAMLINE_HOME", str(tmp_path))
    assert job_server.fetched() is None
    folder = job_server.cache_folder(job_server.FALLBACK_BEAM)
    folder.mkdir(parents=True)
    (folder / "classpath.txt").write_text("/m2/a.jar:/m2/b.jar\n")
    record = {"beam_job_server": job_server.FALLBACK_BEAM, "beam_sdk": job_server.sdk_version(),
              "flink": job_server.FLINK, "artifact": "org.apache.beam:beam-runners-flink-1.19:x",
              "runner_jar": "/m2/a.jar", "runner_jar_sha256": "ab" * 32,
              "classpath": str(folder / "classpath.txt"), "tried": []}
    (folder / "job_server.json").write_text(json.dumps(record))
    assert job_server.fetched() == record
    assert job_server.fetch() == (record, job_server.describe(record))
    assert job_server.describe(record).startswith(
        f"Flink 1.19 job server of Beam {job_server.FALLBACK_BEAM} (Python SDK "
        f"{job_server.sdk_version()})")
    assert job_server.job_server_command(record, 8099, 8098) == [
        "java", *job_server.JAVA_OPENS, "-cp", "/m2/a.jar:/m2/b.jar", job_server.DRIVER,
        "--job-port", "8099", "--artifact-port", "8098", "--expansion-port", "0",
        "--flink-master", "[local]"]


@pytest.mark.slow
def test_credit_streaming_on_flink_writes_every_row_while_it_runs(flink, credit_registry,
                                                                 make_requests, tmp_path):
    """The watched-directory source, deduplication state, windowed sampling and the Parquet
    sink on Flink's streaming operators, SDK stages in the external worker pool."""
    landing, out = tmp_path / "landing", tmp_path / "out"
    landing.mkdir()
    requests = make_requests(100, "flink")
    seen, running, status, output = stream_job(
        "pipelines.credit_scoring",
        ["--input_dir", str(landing), "--registry", credit_registry, "--output", str(out),
         "--sample_rate", "1", "--window_secs", "5", "--stop_after_secs", "40"], flink,
        lambda: write_jsonl(landing / "a.jsonl", [*requests, requests[3]]),
        f"{out}/responses/**/*.parquet", 30)
    assert status == 0, output[-3000:]
    assert seen is not None and running, output[-3000:]
    print(f"\nflink: responses in Parquet {seen:.1f} s after the file landed, job running")
    responses = read_rows(out / "responses")
    assert sorted(r["request_id"] for r in responses) == sorted(
        r["request_id"] for r in requests)
    assert [d["stage"] for d in read_rows(out / "dead_letters")] == ["duplicate"]


@pytest.mark.slow
def test_radar_chunks_streamed_on_flink_are_assembled_and_qcd_while_it_runs(
        flink, radar_registry, tmp_path):
    seen, running, status, output, out = stream_klot_chunks(radar_registry, tmp_path, flink,
                                                            90, 70)
    assert status == 0, output[-3000:]
    assert seen is not None and running, output[-3000:]
    print(f"\nflink radar: the volume's index row in Parquet {seen:.1f} s after its last "
          f"chunk landed, job running")
    volumes = read_rows(out / "qc_volumes")
    assert [v["volume_id"] for v in volumes] == ["KLOT-20260328T201457Z"]
    assert len(read_rows(out / "predictions")) == volumes[0]["sweeps_classified"]
    assert check_sweeps_ahead_of_volume(out) == volumes[0]["sweeps_classified"]
    assert read_rows(out / "dead_letters") == []
