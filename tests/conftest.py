"""Shared fixtures: the real data, a trained credit model in a temporary registry, the offers
service on a free loopback port."""

import contextlib
import datetime
import glob
import json
import os
import pathlib
import secrets
import shutil
import socket
import subprocess
import sys
import time

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# The German data set pseudonymises national ids under a key from this variable: a fresh
# random key per test session (no key is ever written down).
os.environ.setdefault("BEAMLINE_PII_KEY", secrets.token_hex(32))

ROOT = pathlib.Path(__file__).resolve().parent.parent
DATA_DIR = pathlib.Path(os.environ.get("BEAMLINE_DATA", ROOT.parent / "shared" / "data"))
GERMAN = DATA_DIR / "credit" / "german.data"
CRX = DATA_DIR / "credit" / "crx.data"


def german_dataset():
    """The German credit data set configuration (<config>/datasets/credit_german.json)."""
    from models.credit.dataset import load_dataset

    return load_dataset("credit_german")


def load_german(path) -> tuple[list[dict], object]:
    """(records, labels 1 good / 0 bad) of german.data, read as its configuration says."""
    from models.credit.dataset import read_data

    loaded = read_data(german_dataset(), str(path))
    return loaded.records, loaded.labels


def german_scenarios() -> dict:
    """The demo scenarios configured for German credit."""
    from models.config import default_path
    from models.credit.scenarios import load_scenarios

    return load_scenarios(default_path("scenarios", "credit_german"), german_dataset())
# Fewer epochs than the default keep the suite quick; the model is still a real one.
TEST_EPOCHS = 25


@pytest.fixture(scope="session")
def german_path() -> str:
    if not GERMAN.exists():
        pytest.skip(f"real data not found at {GERMAN} (set BEAMLINE_DATA)")
    return str(GERMAN)


@pytest.fixture(scope="session")
def credit_registry(german_path, tmp_path_factory) -> str:
    """A registry holding one trained credit model (v0001)."""
    from models.credit.train import train

    registry = str(tmp_path_factory.mktemp("registry"))
    train("credit_german", registry, german_path, seed=7, epochs=TEST_EPOCHS,
          command="pytest fixture")
    return registry


@pytest.fixture(scope="session")
def crx_path() -> str:
    if not CRX.exists():
        pytest.skip(f"real data not found at {CRX} (set BEAMLINE_DATA)")
    return str(CRX)


@pytest.fixture(scope="session")
def crx_registry(credit_registry, crx_path) -> str:
    """The credit registry with a Credit Approval (crx) model beside the German one."""
    from models.credit.train import train

    train("credit_crx", credit_registry, crx_path, seed=7, epochs=TEST_EPOCHS,
          command="pytest fixture")
    return credit_registry


@pytest.fixture(scope="session")
def credit_model_ref(credit_registry):
    from models import registry

    return registry.resolve(credit_registry, "credit_german")


@pytest.fixture(scope="session")
def german_records(german_path):
    return load_german(german_path)


@pytest.fixture
def make_requests(german_records):
    """make_requests(n, prefix) -> list of request dicts replayed from the German data."""
    from models.credit.replay import replay_requests

    records, _ = german_records
    start = datetime.datetime(2026, 11, 1, tzinfo=datetime.UTC)

    def make(n: int, prefix: str = "req", spacing_secs: float = 3600.0):
        return replay_requests(records, n, start, spacing_secs, prefix)

    return make


def write_jsonl(path, lines) -> str:
    """Write requests (dicts are JSON-encoded, strings written as they are) one per line."""
    with open(path, "w", encoding="utf-8") as f:
        for line in lines:
            f.write((line if isinstance(line, str) else json.dumps(line)) + "\n")
    return str(path)


@pytest.fixture
def offer_service():
    """Start the offers service with the given faults; stopped at the end of the test."""
    from services.bank_offers import Faults, running_offer_service

    contexts = []

    def start(**faults):
        context = running_offer_service(Faults(**faults))
        contexts.append(context)
        return context.__enter__()

    yield start
    for context in contexts:
        context.__exit__(None, None, None)


KLBB = DATA_DIR / "radar" / "KLBB20160601_150025_V06"
KLOT_CHUNKS = DATA_DIR / "radar" / "nexrad_chunks_KLOT"


@pytest.fixture(scope="session")
def klbb_path() -> str:
    if not KLBB.exists():
        pytest.skip(f"real data not found at {KLBB} (set BEAMLINE_DATA)")
    return str(KLBB)


@pytest.fixture(scope="session")
def radar_registry(tmp_path_factory) -> str:
    """A registry holding the radar QC UNets, dual-pol ``radar_qc`` and single-pol
    ``radar_qc_single`` (v0001 each), trained briefly: real models, less skill than the
    default training."""
    from models.radar_qc.train import train

    registry = str(tmp_path_factory.mktemp("radar_registry"))
    for polarization in ("dual", "single"):
        train(registry, seed=5, train_windows=160, holdout_windows=6, epochs=2,
              command=(f"python -m models.radar_qc.train --registry {registry} --seed 5 "
                       f"--train_windows 160 --holdout_windows 6 --epochs 2 "
                       f"--polarization {polarization}"),
              polarization=polarization)
    return registry


@pytest.fixture(scope="session")
def radar_model_ref(radar_registry):
    from models import registry

    return registry.resolve(radar_registry, "radar_qc")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve_app(app, http=None):
    """An ASGI app under uvicorn on a free 127.0.0.1 port, in a thread, with the services'
    HTTP protocol (``services.http.TimedH11Protocol``, or ``http``); yields its base URL."""
    import threading
    import time

    import uvicorn

    from services.http import TimedH11Protocol

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="warning", http=http or TimedH11Protocol))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(200):
        if server.started:
            break
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def rows_of(batch) -> list[dict]:
    """The rows of a record batch (the credit pipeline's element type), for assertions."""
    return batch.to_pylist()


# --- engines: an external SDK worker pool, job services (tests/test_runners.py, test_flink.py)

def wait_for_port(port: int, process, timeout: float = 60.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"service on port {port} exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"nothing listens on port {port} after {timeout} s")


@pytest.fixture(scope="session")
def worker_pool(tmp_path_factory):
    """An external SDK worker pool whose workers import beamline from the package built by
    setup.py (installed into a folder of its own), never from the checkout: (its port, the
    folder, the services' log)."""
    root = tmp_path_factory.mktemp("portable")
    subprocess.run([sys.executable, "setup.py", "-q", "sdist", "--dist-dir", str(root)],
                   cwd=ROOT, check=True, capture_output=True)
    (sdist,) = root.glob("*.tar.gz")
    staged = root / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                    "--no-build-isolation", "--target", str(staged), str(sdist)],
                   cwd=root, check=True, capture_output=True)
    pool_port = free_port()
    env = dict(os.environ, PYTHONPATH=str(staged),
               PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
    log = open(root / "services.log", "wb")
    pool = subprocess.Popen([sys.executable, "-m", "apache_beam.runners.worker.worker_pool_main",
                             "--service_port", str(pool_port)], cwd=root, env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    try:
        wait_for_port(pool_port, pool)
        yield pool_port, staged, log
    finally:
        pool.terminate()
        pool.wait(timeout=30)
        log.close()


def job_service(command: list[str], job_port: int, pool_port: int, log, cwd):
    """A job service on ``job_port`` (started by ``command``) for as long as the generator
    runs: the PortableRunner arguments that reach it with the external worker pool."""
    job = subprocess.Popen(command, cwd=cwd, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_port(job_port, job, timeout=120)
        yield ["--runner", "PortableRunner", "--job_endpoint", f"localhost:{job_port}",
               "--environment_type", "EXTERNAL", "--environment_config", f"localhost:{pool_port}"]
    finally:
        job.terminate()
        job.wait(timeout=30)


@pytest.fixture(scope="session")
def flink(worker_pool):
    """Beam's Flink job server (fetched by set-up) on an embedded Flink mini cluster, with the
    worker pool: every stage runs in Flink's operators, the SDK stages in the pool."""
    from runners.flink import fetch, job_server_command

    record, said = fetch()
    if record is None:
        pytest.skip(said)
    pool_port, staged, log = worker_pool
    job_port = free_port()
    yield from job_service(job_server_command(record, job_port, free_port()), job_port,
                           pool_port, log, staged.parent)


def stream_job(module: str, args: list[str], runner_args: list[str], land, written: str,
               limit_secs: float) -> tuple[float | None, bool, int, str]:
    """Runs ``module`` in streaming on a runner, calls ``land()`` once it is up, and waits up
    to ``limit_secs`` for a file matching ``written``.

    Returns:
        (seconds from landed to written or None, whether the job was still running then,
        its exit status, its console).
    """
    import threading

    job = subprocess.Popen(
        [sys.executable, "-m", module, "--streaming", *args, *runner_args],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    # Read the console as it comes: a full pipe would stall the job's logging, and with it the
    # job (long enough for a chunk set to time out).
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(job.stdout), daemon=True)
    reader.start()
    try:
        time.sleep(15)  # the job is up and watching
        land()
        landed, seen = time.monotonic(), None
        while time.monotonic() - landed < limit_secs and job.poll() is None:
            if glob.glob(written, recursive=True):
                seen = time.monotonic() - landed
                break
            time.sleep(0.5)
        running = job.poll() is None
        job.wait(timeout=240)
    finally:
        if job.poll() is None:
            job.kill()
    reader.join(timeout=10)
    output = "".join(lines)
    return seen, running, job.returncode, output


def stream_klot_chunks(registry: str, tmp_path, runner_args: list[str], stop_after_secs: int,
                       limit_secs: float):
    """The radar chunk stream on a runner while the 55 KLOT real-time chunks land shuffled:
    ``stream_job``'s answer and the output folder."""
    from services.chunk_feed import chunk_files, feed_chunks

    if not KLOT_CHUNKS.exists():
        pytest.skip(f"real data not found at {KLOT_CHUNKS}")
    landing, out = tmp_path / "landing", tmp_path / "out"
    landing.mkdir()
    answer = stream_job(
        "pipelines.radar_qc",
        ["--chunk_dir", str(landing), "--registry", registry, "--output", str(out),
         "--sample_rate", "1", "--poll_secs", "0.5", "--window_secs", "5",
         "--chunk_timeout_secs", "60", "--stop_after_secs", str(stop_after_secs)], runner_args,
        lambda: feed_chunks(chunk_files(str(KLOT_CHUNKS)), str(landing), "KLOT",
                            delay_secs=0.05, shuffle_seed=1),
        f"{out}/qc_volumes/**/*.parquet", limit_secs)
    return (*answer, out)


def check_sweeps_ahead_of_volume(out) -> int:
    """Every dual-pol sweep of the streamed KLOT volume was written on its own under
    ``sweeps/`` with the classes (and masked moments) its volume's file has for that sweep;
    returns how many."""
    import numpy as np
    import xarray as xr

    [volume] = glob.glob(f"{out}/volumes/radar=KLOT/**/*_qc.nc", recursive=True)
    files = sorted(glob.glob(f"{out}/sweeps/radar=KLOT/**/*_qc.nc", recursive=True))
    whole = xr.open_datatree(volume)
    classified = [name for name in whole.children if name.startswith("sweep_")
                  and whole[name].ds["QC_CLASS"].attrs["qc_source_sweep"] == int(
                      name.split("_")[1])]
    assert [os.path.basename(f).rsplit("-s", 1)[1] for f in files] == [
        f"{int(n.split('_')[1]):02d}_qc.nc" for n in sorted(
            classified, key=lambda n: int(n.split("_")[1]))]
    for path in files:
        number = int(os.path.basename(path).rsplit("-s", 1)[1][:2])
        one = xr.open_datatree(path)
        assert list(one.children) == ["sweep_0"]
        a, b = one["sweep_0"].ds, whole[f"sweep_{number}"].ds
        assert int(a["sweep_number"]) == number
        np.testing.assert_array_equal(a["QC_CLASS"].values, b["QC_CLASS"].values)
        assert a["QC_CLASS"].attrs["qc_source_sweep"] == number
        np.testing.assert_array_equal(a["DBZH"].values, b["DBZH"].values)
        assert one.attrs["qc_model_version"] == whole.attrs["qc_model_version"]
    return len(files)


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


def render_page(path, script: str | None = None):
    """Open a page in headless Chromium; returns (images, broken images, broken links, page
    text, tables by id) and, with ``script``, what that script returned as well."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        driver.get(f"file://{path}")
        broken_images = driver.execute_script(
            "return Array.from(document.images).filter("
            "i => !i.complete || i.naturalWidth === 0).map(i => i.src);")
        images = driver.execute_script("return document.images.length;")
        links = driver.execute_script(
            "return Array.from(document.links).map(a => a.href);")
        text = driver.find_element("tag name", "body").text
        tables = driver.execute_script(
            "const out = {};"
            "for (const t of document.querySelectorAll('table[id]')) {"
            "  out[t.id] = Array.from(t.rows).slice(1).map(r => ({"
            "    cells: Array.from(r.cells).map(c => c.textContent), cls: r.className}));"
            "}"
            "return out;")
        extra = driver.execute_script(script) if script else None
    finally:
        driver.quit()
    broken_links = [h for h in links if h.startswith("file://")
                    and not os.path.exists(h[len("file://"):])]
    if script:
        return images, broken_images, broken_links, text, tables, extra
    return images, broken_images, broken_links, text, tables


needs_browser = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER) and not os.environ.get("BEAMLINE_REQUIRE_BROWSER"),
    reason="Chromium and chromedriver not installed (.ci/run installs them)")


# Where the operations page's chart drew each alias move, and its time axis.
_TIMELINE_SCRIPT = """
const timeline = document.getElementById('timeline');
const axes = document.getElementById('timeline-axes').getBoundingClientRect();
const moves = {};
for (const g of document.querySelectorAll('#timeline [id^="alias-move-"]')) {
  const r = g.getBoundingClientRect();
  moves[g.id] = r.left + r.width / 2;
}
return {start: timeline.dataset.start, end: timeline.dataset.end, left: axes.left,
        width: axes.width, moves: moves};
"""


def check_operations_page(path: str, moves: list[dict]) -> tuple[str, dict]:
    """Render an operations page in headless Chromium: no broken link, a row and a line per
    alias move, each line where its time falls on the chart's axis (within 3 px). Returns
    (page text, tables by id)."""
    _, _, broken_links, text, tables, timeline = render_page(path, _TIMELINE_SCRIPT)
    assert broken_links == []
    assert len(tables["alias-moves"]) == len(moves)
    start = datetime.datetime.fromisoformat(timeline["start"])
    span = (datetime.datetime.fromisoformat(timeline["end"]) - start).total_seconds()
    for move in moves:
        when = datetime.datetime.fromisoformat(move["time"])
        expected = timeline["left"] + timeline["width"] * (when - start).total_seconds() / span
        assert abs(timeline["moves"][f"alias-move-{move['seq']}"] - expected) < 3, move
    return text, tables
