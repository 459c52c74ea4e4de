"""Beam's Flink job server fetched by set-up (runners.flink): what set-up says without Java or
Maven, the record it keeps, and the job server's command line. The pipelines on Flink are in
tests/test_runners.py (batch, outputs equal to the DirectRunner's)."""

import json

from runners import flink


def test_without_java_or_maven_set_up_says_so_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("BEAMLINE_HOME", str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path / "nothing-here"))
    record, said = flink.fetch()
    assert record is None
    assert said == ("java and mvn not installed: no Flink job server (the Flink tests skip); "
                    "install a JDK 17 and Maven and run `beamline setup` again")


def test_a_fetched_job_server_is_found_with_both_beam_versions_named(tmp_path, monkeypatch):
    monkeypatch.setenv("BEAMLINE_HOME", str(tmp_path))
    assert flink.fetched() is None
    folder = flink.cache_folder(flink.FALLBACK_BEAM)
    folder.mkdir(parents=True)
    (folder / "classpath.txt").write_text("/m2/a.jar:/m2/b.jar\n")
    record = {"beam_job_server": flink.FALLBACK_BEAM, "beam_sdk": flink.sdk_version(),
              "flink": flink.FLINK, "artifact": "org.apache.beam:beam-runners-flink-1.19:x",
              "runner_jar": "/m2/a.jar", "runner_jar_sha256": "ab" * 32,
              "classpath": str(folder / "classpath.txt"), "tried": []}
    (folder / "job_server.json").write_text(json.dumps(record))
    assert flink.fetched() == record
    assert flink.fetch() == (record, flink.describe(record))
    assert flink.describe(record).startswith(
        f"Flink 1.19 job server of Beam {flink.FALLBACK_BEAM} (Python SDK "
        f"{flink.sdk_version()})")
    assert flink.job_server_command(record, 8099, 8098) == [
        "java", "-cp", "/m2/a.jar:/m2/b.jar", flink.DRIVER, "--job-port", "8099",
        "--artifact-port", "8098", "--expansion-port", "0", "--flink-master", "[local]"]
