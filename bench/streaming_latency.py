"""Streaming latency while the job runs, credit and radar.

Credit: file landed -> its response rows in Parquet. Requests land in a watched folder as
files, spread over a period (default 200 requests in 20 files over 60 s); a poller reads each
new responses Parquet file as it appears and notes when every request id was first there and
whether that was before the watched source stopped (``--stop_after_secs`` after launch; after
it the job only drains).

Radar (``--pipeline radar``): the 55 real-time chunks of the KLOT volume land in sequence,
``--chunk_secs`` apart (a NEXRAD volume's chunks come over 4-5 minutes in the field); for
each dual-pol sweep, the chunk holding its end-of-elevation radial landed -> its QC'd sweep
file under ``sweeps/``; and the last chunk landed -> the volume's index row in Parquet.

Each runner asked for runs in its own process, one after the other, in this one bench run:
Prism (built by ``beamline setup``) and the local DirectRunner, which runs the stages after the
watched source only when the job drains, so its figure is the drain.

Usage::

    python -m bench.streaming_latency [--requests 200] [--seconds 60] [--runners prism,direct]
    python -m bench.streaming_latency --pipeline radar --registry registry [--chunk_secs 1]
"""

import argparse
import datetime
import glob
import os
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np
import pyarrow.parquet as pq

from models.credit.dataset import load_dataset, read_data
from models.credit.replay import replay_requests, write_jsonl
from models.provenance import PROJECT_ROOT

MODEL = "credit_german"
SHARED = os.environ.get("BEAMLINE_DATA", "../shared/data")
DATA = os.path.join(SHARED, "credit", "german.data")
KLOT_CHUNKS = os.path.join(SHARED, "radar", "nexrad_chunks_KLOT")
WARM_UP_SECS = 20.0


def _registry(given: str | None, workdir: str) -> str:
    from models import registry as model_registry
    from models.credit.train import train

    if given:
        return given
    registry = os.path.join(workdir, "registry")
    train(MODEL, registry, DATA, epochs=5, command="bench/streaming_latency.py")
    assert model_registry.list_versions(registry, MODEL)
    return registry


def run_once(runner: str, registry: str, requests: list[dict], files: int, seconds: float,
             workdir: str) -> dict:
    """One streaming job on ``runner``; returns per-request latencies and what was seen."""
    landing = os.path.join(workdir, f"landing-{runner}")
    out = os.path.join(workdir, f"out-{runner}")
    os.makedirs(landing)
    extra = ["--runner", "PrismRunner"] if runner == "prism" else []
    stop_after = WARM_UP_SECS + seconds + 30
    # The job's own clock starts after its launch, so a row seen before this is certainly seen
    # before its source stopped.
    source_stops = time.time() + stop_after
    job = subprocess.Popen(
        [sys.executable, "-m", "pipelines.credit_scoring", "--streaming", "--input_dir",
         landing, "--registry", registry, "--output", out, "--sample_rate", "1",
         "--window_secs", "2", "--poll_secs", "1",
         "--stop_after_secs", str(stop_after), *extra],
        cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen: dict[str, float] = {}  # request id -> first seen
    read: set[str] = set()
    stop = threading.Event()

    def poll():
        while not stop.is_set():
            for path in glob.glob(f"{out}/responses/**/*.parquet", recursive=True):
                if path in read:
                    continue
                read.add(path)
                now = time.time()
                for request_id in pq.read_table(path, columns=["request_id"]).column(
                        "request_id").to_pylist():
                    seen.setdefault(request_id, now)
            time.sleep(0.25)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    landed: dict[str, float] = {}
    try:
        time.sleep(WARM_UP_SECS)  # the job is up and watching
        per_file = -(-len(requests) // files)
        for k in range(files):
            part = requests[k * per_file:(k + 1) * per_file]
            temporary = os.path.join(landing, f".part-{k}.tmp")
            write_jsonl(part, temporary)
            os.rename(temporary, os.path.join(landing, f"part-{k:03d}.jsonl"))
            landed.update({r["request_id"]: time.time() for r in part})
            time.sleep(seconds / files)
        output, _ = job.communicate(timeout=WARM_UP_SECS + seconds + 300)
    finally:
        if job.poll() is None:
            job.kill()
    time.sleep(1.0)
    stop.set()
    poller.join()
    if job.returncode:
        raise RuntimeError(f"{runner} run failed:\n{output[-3000:]}")
    latencies = [seen[i] - landed[i] for i in landed if i in seen]
    return {"runner": runner, "requests": len(landed), "seen": len(latencies),
            "while_running": sum(seen[i] < source_stops for i in landed if i in seen),
            "p50": float(np.percentile(latencies, 50)) if latencies else None,
            "p95": float(np.percentile(latencies, 95)) if latencies else None,
            "max": max(latencies) if latencies else None}


def run_radar_once(runner: str, registry: str, chunk_secs: float, workdir: str) -> dict:
    """One radar chunk stream on ``runner``: per-sweep and per-volume latencies."""
    from services.chunk_feed import chunk_files
    from transforms.radar.chunk_assembly import ended_cuts

    landing = os.path.join(workdir, f"landing-radar-{runner}")
    out = os.path.join(workdir, f"out-radar-{runner}")
    os.makedirs(os.path.join(landing, "KLOT"))
    chunks = chunk_files(KLOT_CHUNKS)
    ended_by = {cut: i for i, path in enumerate(chunks) for cut in ended_cuts(path)}
    extra = ["--runner", "PrismRunner"] if runner == "prism" else []
    stop_after = WARM_UP_SECS + len(chunks) * chunk_secs + 40
    source_stops = time.time() + stop_after
    job = subprocess.Popen(
        [sys.executable, "-m", "pipelines.radar_qc", "--streaming", "--chunk_dir", landing,
         "--registry", registry, "--output", out, "--sample_rate", "1", "--poll_secs", "0.5",
         "--window_secs", "5", "--chunk_timeout_secs", "600",
         "--stop_after_secs", str(stop_after), *extra],
        cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen: dict[str, float] = {}  # sweep file or "volume" -> first seen
    stop = threading.Event()

    def poll():
        while not stop.is_set():
            now = time.time()
            for path in glob.glob(f"{out}/sweeps/**/*_qc.nc", recursive=True):
                seen.setdefault(os.path.basename(path), now)
            if glob.glob(f"{out}/qc_volumes/**/*.parquet", recursive=True):
                seen.setdefault("volume", now)
            time.sleep(0.1)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    landed = []
    try:
        time.sleep(WARM_UP_SECS)
        staging = f"{landing}.staging"
        os.makedirs(staging)
        for path in chunks:  # each chunk appears whole (written beside, then renamed)
            staged = os.path.join(staging, os.path.basename(path))
            with open(path, "rb") as source, open(staged, "wb") as sink:
                sink.write(source.read())
            os.replace(staged, os.path.join(landing, "KLOT", os.path.basename(path)))
            landed.append(time.time())
            time.sleep(chunk_secs)
        output, _ = job.communicate(timeout=stop_after + 300)
    finally:
        if job.poll() is None:
            job.kill()
    time.sleep(0.5)
    stop.set()
    poller.join()
    if job.returncode:
        raise RuntimeError(f"{runner} run failed:\n{output[-3000:]}")
    sweeps = {name: at for name, at in seen.items() if name != "volume"}
    # <volume id>-s<NN>_qc.nc: sweep NN is cut NN + 1.
    latencies = [at - landed[ended_by[int(name.rsplit("-s", 1)[1][:2]) + 1]]
                 for name, at in sweeps.items()]
    return {"runner": runner, "sweeps": len(sweeps),
            "while_running": sum(at < source_stops for at in sweeps.values()),
            "p50": float(np.percentile(latencies, 50)) if latencies else None,
            "p95": float(np.percentile(latencies, 95)) if latencies else None,
            "max": max(latencies) if latencies else None,
            "volume": seen["volume"] - landed[-1] if "volume" in seen else None,
            "volume_while_running": seen.get("volume", float("inf")) < source_stops}


def _radar_registry(given: str | None) -> str:
    from models import registry as model_registry

    registry = os.path.abspath(given or os.path.join(PROJECT_ROOT, "registry"))
    if not model_registry.list_versions(registry, "radar_qc"):
        raise SystemExit(f"no radar_qc model in {registry}: run ./run_local.sh (it trains one) "
                         f"or give --registry")
    return registry


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--files", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=60.0,
                        help="the period the files land over")
    parser.add_argument("--runners", default="prism,direct")
    parser.add_argument("--registry", default=None,
                        help="credit: default a temp registry trained now; radar: default the "
                             "project's registry/ (its radar_qc model)")
    parser.add_argument("--pipeline", choices=("credit", "radar"), default="credit")
    parser.add_argument("--chunk_secs", type=float, default=1.0,
                        help="radar: pause between chunks landing")
    args = parser.parse_args(argv)
    runners = [r.strip() for r in args.runners.split(",") if r.strip()]
    unknown = sorted(set(runners) - {"prism", "direct"})
    if unknown or not runners:
        parser.error(f"--runners takes prism and/or direct, got {args.runners!r}")
    if "prism" in runners:
        from runners.prism import prism_binary

        if not prism_binary().exists():
            parser.error(f"no Prism at {prism_binary()}: run `beamline setup` (it needs Go), or "
                         f"give --runners direct")
    if args.pipeline == "radar":
        return radar(args, runners, parser)
    if not os.path.exists(DATA):
        parser.error(f"no {DATA}: set BEAMLINE_DATA to the shared data folder")
    records = read_data(load_dataset(MODEL), DATA).records
    with tempfile.TemporaryDirectory() as workdir:
        registry = _registry(args.registry, workdir)
        results = []
        for runner in runners:
            # Event times now, so the requests sit inside the accepted window.
            requests = replay_requests(records, args.requests,
                                       datetime.datetime.now(datetime.UTC), 0.1, runner)
            results.append(run_once(runner, registry, requests, args.files, args.seconds,
                                    workdir))
    print(f"\n{args.requests} requests in {args.files} files over {args.seconds:g} s; file "
          f"landed -> response row in Parquet:")
    for r in results:
        figures = (f"p50 {r['p50']:.1f} s, p95 {r['p95']:.1f} s, max {r['max']:.1f} s"
                   if r["p50"] is not None else "none seen")
        print(f"  {r['runner']:<7} {r['seen']} of {r['requests']} seen, {r['while_running']} "
              f"before its source stopped; {figures}")
    if len(results) == 2 and all(r["p50"] for r in results):
        print(f"  p50 {results[1]['runner']} / {results[0]['runner']} = "
              f"{results[1]['p50'] / results[0]['p50']:.1f}x")
    return 0


def radar(args, runners: list[str], parser) -> int:
    if not os.path.isdir(KLOT_CHUNKS):
        parser.error(f"no {KLOT_CHUNKS}: set BEAMLINE_DATA to the shared data folder")
    registry = _radar_registry(args.registry)
    with tempfile.TemporaryDirectory() as workdir:
        results = [run_radar_once(runner, registry, args.chunk_secs, workdir)
                   for runner in runners]
    print(f"\nthe 55 KLOT chunks landing {args.chunk_secs:g} s apart; chunk ending a sweep "
          f"landed -> its QC'd sweep file; last chunk landed -> the volume's index row:")
    for r in results:
        sweeps = (f"p50 {r['p50']:.1f} s, p95 {r['p95']:.1f} s, max {r['max']:.1f} s"
                  if r["p50"] is not None else "none seen")
        volume = (f"{r['volume']:.1f} s" + ("" if r["volume_while_running"] else
                                           " (after its source stopped)")
                  if r["volume"] is not None else "not seen")
        print(f"  {r['runner']:<7} {r['sweeps']} sweeps, {r['while_running']} before its source "
              f"stopped: {sweeps}; volume {volume}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
