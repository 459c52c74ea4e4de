"""The same batch inputs on four runners give the same outputs: the DirectRunner, Dask on a
LocalCluster of two worker processes (runners.dask_runner), the PortableRunner against Beam's
local job service, and Flink (Beam's Flink job server on an embedded mini cluster,
runners.flink); the last two with an external worker pool whose workers import the package
installed from the sdist (not the checkout)."""

import json
import os
import sys

import pyarrow.dataset as ds
import pytest

from models.credit.scenarios import generate
from pipelines import credit_scoring, evaluate, radar_qc
from tests.conftest import free_port, job_service, load_german, write_jsonl

pytestmark = pytest.mark.slow  # pipeline runs; the fast tier is -m 'not slow'

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Differ from run to run by nature (clock, or the output folder inside a path).
VOLATILE = {"processed_at", "latency_ms", "received_at", "failed_at", "evaluated_at",
            "netcdf", "quicklook"}
BAD_LINES = ['{"request_id": "broken", ', '["not", "an", "object"]']



@pytest.fixture(scope="module")
def dask_args():
    from distributed import LocalCluster

    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                           dashboard_address=None)
    yield ["--runner", "runners.dask_runner.DaskRunner",
           "--dask_client_address", cluster.scheduler_address]
    cluster.close()


@pytest.fixture(scope="module")
def portable(worker_pool):
    """Beam's local job service (Python) with the worker pool."""
    pool_port, staged, log = worker_pool
    job_port = free_port()
    for args in job_service([sys.executable, "-m",
                              "apache_beam.runners.portability.local_job_service_main",
                              "--port", str(job_port)], job_port, pool_port, log,
                             staged.parent):
        yield {"staged": str(staged), "args": args}


def _rows(out: str, name: str, key) -> list[dict]:
    path = os.path.join(out, name)
    if not os.path.isdir(path):
        return []
    rows = ds.dataset(path, partitioning="hive").to_table().to_pylist()
    return sorted(({k: v for k, v in r.items() if k not in VOLATILE} for r in rows), key=key)


def _outputs(out: str, names: dict) -> dict:
    return {name: _rows(out, name, key) for name, key in names.items()}


CREDIT_OUTPUTS = {"responses": lambda r: r["request_id"],
                  "predictions": lambda r: r["prediction_id"],
                  "dead_letters": lambda r: r["dead_letter_id"]}


@pytest.fixture(scope="module")
def credit_input(german_path, tmp_path_factory):
    root = tmp_path_factory.mktemp("cross_runner_credit")
    records, labels = load_german(german_path)
    requests, truth = generate(records, labels, {}, (), weeks=2, per_week=150, seed=5)
    path = write_jsonl(root / "requests.jsonl", [*requests, *BAD_LINES])
    truth_path = write_jsonl(root / "truth.jsonl", truth)
    return path, truth_path, root


def _run_credit(registry, requests, out, runner_args):
    credit_scoring.run(["--input", requests, "--registry", registry, "--output", out,
                        "--sample_rate", "0.5", "--run_id", "cross-runner", *runner_args])
    return _outputs(out, CREDIT_OUTPUTS)


def test_credit_batch_is_identical_on_direct_dask_portable_and_flink(
        credit_input, credit_registry, dask_args, portable, flink):
    requests, _, root = credit_input
    direct = _run_credit(credit_registry, requests, f"{root}/direct", [])
    assert len(direct["responses"]) == 300 and len(direct["dead_letters"]) == 2
    assert len(direct["predictions"]) > 100
    for name, args in (("dask", dask_args), ("portable", portable["args"]), ("flink", flink)):
        assert _run_credit(credit_registry, requests, f"{root}/{name}", args) == direct, name


def test_evaluation_is_identical_on_direct_dask_portable_and_flink(
        credit_input, credit_registry, dask_args, portable, flink):
    requests, truth, root = credit_input
    predictions = f"{root}/evaluated"
    credit_scoring.run(["--input", requests, "--registry", credit_registry, "--output",
                        predictions, "--sample_rate", "0.5", "--run_id", "evaluated"])
    results = {}
    for name, args in (("direct", []), ("dask", dask_args), ("portable", portable["args"]),
                       ("flink", flink)):
        out = f"{root}/evaluation_{name}"
        evaluate.run(["--pipeline", "credit_scoring", "--predictions", predictions, "--truth",
                      truth, "--registry", credit_registry, "--output", out, "--run_id",
                      "eval-cross-runner", *args])
        results[name] = _rows(f"{out}/evaluation", "metrics", lambda r: json.dumps(
            [r["model_version"], r["window_start"], r["slice"], r["slice_value"], r["metric"],
             r["detail"]]))
    assert len(results["direct"]) > 500
    assert results["dask"] == results["direct"]
    assert results["portable"] == results["direct"]
    assert results["flink"] == results["direct"]


RADAR_OUTPUTS = {"predictions": lambda r: r["prediction_id"],
                 "qc_volumes": lambda r: r["volume_id"],
                 "dead_letters": lambda r: r["dead_letter_id"]}


def test_radar_batch_is_identical_on_direct_dask_portable_and_flink(
        klbb_path, radar_registry, tmp_path, dask_args, portable, flink):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    os.symlink(klbb_path, inputs / os.path.basename(klbb_path))
    (inputs / "corrupt_V06").write_bytes(os.urandom(50_000))
    results = {}
    for name, args in (("direct", []), ("dask", dask_args), ("portable", portable["args"]),
                       ("flink", flink)):
        out = str(tmp_path / name)
        radar_qc.run(["--input", f"{inputs}/*", "--registry", radar_registry, "--output", out,
                      "--sample_rate", "1.0", "--run_id", "cross-runner", *args])
        results[name] = _outputs(out, RADAR_OUTPUTS)
        assert os.path.exists(f"{out}/volumes/radar=KLBB/dt=2016-06-01/"
                              f"KLBB-20160601T150025Z_qc.nc"), name
    direct = results["direct"]
    assert len(direct["qc_volumes"]) == 1 and len(direct["predictions"]) >= 5
    assert [d["stage"] for d in direct["dead_letters"]] == ["decode"]
    assert results["dask"] == direct
    assert results["portable"] == direct
    assert results["flink"] == direct


def test_portable_workers_import_beamline_from_the_staged_package(portable, tmp_path):
    """The worker processes run the package installed from the sdist, not the checkout."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    target = tmp_path / "where.txt"

    def where(_):
        import transforms.common.sampling

        with open(target, "w", encoding="utf-8") as f:
            f.write(f"{os.getpid()} {transforms.common.sampling.__file__}")

    with beam.Pipeline(options=PipelineOptions(portable["args"])) as pipeline:
        _ = pipeline | beam.Create([0]) | beam.Map(where)
    pid, path = target.read_text().split(" ", 1)
    assert int(pid) != os.getpid()
    assert path.startswith(portable["staged"]) and not path.startswith(ROOT)
