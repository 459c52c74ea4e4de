"""Production launch: every pipeline's graph builds with the README's Dataflow and Flink options
(nothing is submitted, no network), and the package built from setup.py holds every module and
data file the workers import."""

import os
import subprocess
import sys
import tarfile

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from pipelines import credit_scoring, radar_qc

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The README's launch options (placeholders for the project and buckets).
DATAFLOW = ["--runner", "DataflowRunner", "--project", "beamline-prod", "--region", "europe-west1",
            "--temp_location", "gs://beamline-temp/tmp", "--setup_file", f"{ROOT}/setup.py",
            "--max_num_workers", "20"]
DATAFLOW_GPU = ["--machine_type", "n1-standard-8", "--dataflow_service_options",
                "worker_accelerator=type:nvidia-tesla-t4;count:1;install-nvidia-driver",
                "--experiments", "use_runner_v2"]
FLINK = ["--runner", "FlinkRunner", "--flink_master", "flink-jobmanager:8081",
         "--environment_type", "EXTERNAL", "--environment_config", "localhost:50000",
         "--parallelism", "8"]


def _graph(module, argv):
    """Build a pipeline's graph for a runner without running it; the labels of its steps."""
    options = PipelineOptions(argv)
    pipeline = beam.Pipeline(options=options)
    module.build(pipeline, module.prepare(options))
    proto = pipeline.to_runner_api()
    return {t.unique_name for t in proto.components.transforms.values()}


@pytest.mark.parametrize("runner", [DATAFLOW + ["--machine_type", "n2-standard-4"], FLINK],
                         ids=["dataflow", "flink"])
def test_credit_batch_graph_builds_for_production_runners(runner, credit_registry):
    labels = _graph(credit_scoring, runner + [
        "--input", "gs://beamline-data/requests/2026-11-*/*.jsonl",
        "--registry", credit_registry, "--output", "gs://beamline-out/credit",
        "--offer_url", "https://offers.internal.example"])
    assert {"ScoreCredit", "RequestOffers", "WriteResponses", "WritePredictions",
            "WriteDeadLetters"} <= labels


def test_credit_streaming_graph_builds_for_dataflow_with_pubsub(credit_registry):
    labels = _graph(credit_scoring, DATAFLOW + [
        "--streaming", "--enable_streaming_engine",
        "--input_topic", "projects/beamline-prod/topics/credit-requests",
        "--registry", credit_registry, "--output", "gs://beamline-out/credit",
        "--window_secs", "60", "--max_batch_duration_secs", "1"])
    assert {"ReadPubSub", "WindowRequests", "ScoreCredit", "WritePredictions"} <= labels


@pytest.mark.parametrize("runner", [DATAFLOW + DATAFLOW_GPU, FLINK],
                         ids=["dataflow-gpu", "flink"])
def test_radar_batch_graph_builds_for_production_runners(runner, radar_registry):
    labels = _graph(radar_qc, runner + [
        "--input", "gs://beamline-data/nexrad/KLOT/2026/03/28/*_V06",
        "--registry", radar_registry, "--output", "gs://beamline-out/radar"])
    assert {"DecodeVolumes", "ClassifyGates", "WriteQcVolumes", "WritePredictions"} <= labels


def test_sdist_holds_every_module_and_data_file_the_workers_import(tmp_path):
    """Workers install the sdist (--setup_file): anything missing there imports only from a
    checkout, and fails on Dataflow or Flink."""
    subprocess.run([sys.executable, "setup.py", "-q", "sdist", "--dist-dir", str(tmp_path)],
                   cwd=ROOT, check=True, capture_output=True)
    (archive,) = tmp_path.glob("*.tar.gz")
    with tarfile.open(archive) as tar:
        members = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
    folders = ["pipelines", "transforms", "models", "services", "runners"]
    tracked = subprocess.run(["git", "ls-files", *folders], cwd=ROOT, check=True,
                             capture_output=True, text=True).stdout.split()
    needed = {path for path in tracked if path.endswith((".py", ".json"))}
    assert needed and needed <= members, sorted(needed - members)
