"""Beam's Flink job server, fetched from Maven Central by set-up, started on loopback.

Beam's Python ``FlinkRunner`` takes the shaded job server jar
(``org.apache.beam:beam-runners-flink-<flink>-job-server``) by ``--flink_job_server_jar``.
Maven Central as reached from the project's machines serves that jar at no Beam version, nor
the Flink runner module at the installed Beam's; it serves the module
``beam-runners-flink-1.19`` and every dependency at ``FALLBACK_BEAM`` (the newest Beam at which
they resolve together). So set-up resolves the job server as that module's classpath with Maven
into ``<BEAMLINE_HOME or the project>/.cache/flink/beam-<version>-flink-<flink>/`` and records
the versions and the runner jar's sha256 in ``job_server.json``; ``start_job_server`` runs its
``FlinkJobServerDriver`` against an embedded Flink mini cluster (``--flink-master [local]``) or
a given jobmanager. Pipelines reach it as ``--runner PortableRunner --job_endpoint
localhost:<port>`` with their SDK workers in an external worker pool. The Beam versions of the
job server and of the Python SDK differ: every run summary and the docs say both.
"""

import hashlib
import importlib.metadata
import json
import os
import pathlib
import re
import shutil
import subprocess

from models.provenance import PROJECT_ROOT

FLINK = "1.19"
# Tried in order: the installed Beam's, then the newest whose modules Maven Central serves.
FALLBACK_BEAM = "2.62.0"
DRIVER = "org.apache.beam.runners.flink.FlinkJobServerDriver"
FETCH_TIMEOUT_SECS = 1800
# What Flink's own launch scripts open on Java 17 (its env.java.opts.all): Flink's state
# serializers reach into these packages, and streaming jobs fail without them.
JAVA_OPENS = [f"--add-opens=java.base/{package}=ALL-UNNAMED" for package in (
    "java.lang", "java.lang.reflect", "java.net", "java.io", "java.nio", "sun.nio.ch",
    "java.text", "java.time", "java.util", "java.util.concurrent",
    "java.util.concurrent.atomic", "java.util.concurrent.locks")]
POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>beamline</groupId><artifactId>flink-job-server</artifactId><version>1</version>
  <dependencies>
    <dependency>
      <groupId>org.apache.beam</groupId><artifactId>beam-runners-flink-{flink}</artifactId>
      <version>{beam}</version>
    </dependency>
  </dependencies>
</project>
"""


def sdk_version() -> str:
    """The installed Beam Python SDK's version (read without importing Beam)."""
    return importlib.metadata.version("apache-beam")


def cache_folder(beam: str, flink: str = FLINK) -> pathlib.Path:
    home = pathlib.Path(os.environ.get("BEAMLINE_HOME") or PROJECT_ROOT)
    return home / ".cache" / "flink" / f"beam-{beam}-flink-{flink}"


def fetched() -> dict | None:
    """The job server set-up fetched (its ``job_server.json``), the installed Beam's first."""
    for beam in dict.fromkeys((sdk_version(), FALLBACK_BEAM)):
        record = cache_folder(beam) / "job_server.json"
        if record.exists():
            return json.loads(record.read_text())
    return None


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch() -> tuple[dict | None, str]:
    """Resolve the job server's classpath unless it is there: (its record or None, what
    happened in words)."""
    known = fetched()
    if known:
        return known, describe(known)
    missing = [tool for tool in ("java", "mvn") if shutil.which(tool) is None]
    if missing:
        return None, (f"{' and '.join(missing)} not installed: no Flink job server (the Flink "
                      f"tests skip); install a JDK 17 and Maven and run `beamline setup` again")
    tried = []
    for beam in dict.fromkeys((sdk_version(), FALLBACK_BEAM)):
        folder = cache_folder(beam)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "pom.xml").write_text(POM.format(flink=FLINK, beam=beam))
        try:
            done = subprocess.run(
                ["mvn", "-q", "-B", "-Dstyle.color=never", "dependency:build-classpath",
                 "-Dmdep.outputFile=classpath.txt"], cwd=folder, capture_output=True,
                text=True, timeout=FETCH_TIMEOUT_SECS)
        except subprocess.TimeoutExpired:
            tried.append(f"{beam}: over {FETCH_TIMEOUT_SECS} s")
            continue
        if done.returncode != 0:
            missing = re.search(r"Could not find artifact (\S+)|(\S+) was not found in",
                                done.stdout + done.stderr)
            tried.append(f"{beam}: " + (f"Maven Central does not serve "
                                        f"{missing.group(1) or missing.group(2)}"
                                        if missing else "mvn failed"))
            continue
        classpath = (folder / "classpath.txt").read_text().strip()
        runner_jar = next(p for p in classpath.split(os.pathsep)
                          if f"beam-runners-flink-{FLINK}-{beam}.jar" in p)
        record = {"beam_job_server": beam, "beam_sdk": sdk_version(), "flink": FLINK,
                  "artifact": f"org.apache.beam:beam-runners-flink-{FLINK}:{beam}",
                  "runner_jar": runner_jar, "runner_jar_sha256": _sha256(runner_jar),
                  "classpath": str(folder / "classpath.txt"), "tried": tried}
        (folder / "job_server.json").write_text(json.dumps(record, indent=1) + "\n")
        return record, "fetched " + describe(record)
    return None, "no Flink job server from Maven Central: " + "; ".join(tried)


def describe(record: dict) -> str:
    return (f"Flink {record['flink']} job server of Beam {record['beam_job_server']} (Python "
            f"SDK {record['beam_sdk']}), {record['artifact']} sha256 "
            f"{record['runner_jar_sha256'][:12]}...")


def job_server_command(record: dict, job_port: int, artifact_port: int,
                       flink_master: str = "[local]") -> list[str]:
    """The command line of the job server (``FlinkJobServerDriver``)."""
    classpath = pathlib.Path(record["classpath"]).read_text().strip()
    return ["java", *JAVA_OPENS, "-cp", classpath, DRIVER, "--job-port", str(job_port),
            "--artifact-port", str(artifact_port), "--expansion-port", "0", "--flink-master",
            flink_master]
