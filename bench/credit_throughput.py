"""Credit throughput, measured side by side on the same 100,000 requests in one run.

    (a) raw model(batch) in batches, dict -> columns included   (the model's own limit)
    (b) minimal Beam pipeline: Create -> RunInference -> Map     (Beam's floor, dict elements)
    (c) full credit pipeline, batch, offer step off              (record-batch elements;
        deduplication by request id on)
    (c_nd) the same with --no_dedup (a backfill of requests deduplicated when first scored)
    (c0) the same, as the code was at --baseline (a git revision; default: before batching)
    (d) full credit pipeline, batch, against the local offer service
    (e) one request at a time through the exported SavedModel's serving signature (what the
        serving function runs per request: the fastest honest per-request path)
    (e') one request at a time through the Keras model called eagerly (footnote only)
    streaming: seconds from a file landing in the watched directory to its rows being scored
               and to its rows being in Parquet

(c) and (c0) run as their own processes on the same input and registry and report the run's
own wall time (the pipeline's closing summary), so start-up imports count for neither.

Usage::

    python -m bench.credit_throughput [--rows 100000] [--registry registry] [--baseline REV]

Not a test: it prints numbers, asserts nothing.
"""

import argparse
import datetime
import os
import platform
import re
import subprocess
import sys
import tempfile
import threading
import time

import apache_beam as beam
import pyarrow.dataset as ds
from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.ml.inference.base import RunInference
from apache_beam.options.pipeline_options import PipelineOptions

from bench.baseline import BASELINE, ROOT, checkout
from models import registry as model_registry
from models.credit.dataset import load_dataset, read_data
from models.credit.handler import credit_model_handler
from models.credit.model import predict_scores
from models.credit.replay import replay_requests, write_jsonl
from models.credit.train import train
from models.exit_codes import run_command
from pipelines import credit_scoring
from services.bank_offers import Faults, running_offer_service

DATA = "../shared/data/credit/german.data"
MODEL = "credit_german"
GERMAN = load_dataset(MODEL)
KINDS = GERMAN.kinds


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def raw_model(model, records, batch_size):
    for i in range(0, len(records), batch_size):
        predict_scores(model, records[i:i + batch_size], KINDS)


def minimal_beam(model_path, records) -> int:
    """Run the minimal pipeline; returns how many predictions came out (a Beam counter)."""
    scored = Metrics.counter("bench", "scored")

    def count(kv):
        scored.inc()
        return kv[1].inference

    keyed = [(i, r) for i, r in enumerate(records)]
    p = beam.Pipeline(options=PipelineOptions(["--runner", "DirectRunner"]))
    _ = (p | beam.Create(keyed, reshuffle=False)
         | RunInference(credit_model_handler(model_path, KINDS))
         | beam.Map(count))
    result = p.run()
    result.wait_until_finish()
    counters = result.metrics().query(MetricsFilter().with_name("scored"))["counters"]
    return sum(c.committed or c.attempted for c in counters)




def full_pipeline(registry, input_path, out, offer_url=None, code_dir=ROOT, extra=()) -> float:
    """Run the pipeline of the code in ``code_dir`` in its own process; its wall time (s)."""
    args = [sys.executable, "-m", "pipelines.credit_scoring", "--input", input_path,
            "--registry", registry, "--output", out, "--sample_rate", "0.1", *extra]
    if offer_url:
        args += ["--offer_url", offer_url]
    done = subprocess.run(args, cwd=code_dir, capture_output=True, text=True, check=False,
                          env=dict(os.environ, PYTHONPATH=code_dir))
    match = re.search(r"run \S+: DONE in ([\d.]+) s", done.stdout)
    if done.returncode or not match:
        raise RuntimeError(f"pipeline in {code_dir} failed:\n{done.stdout[-2000:]}"
                           f"{done.stderr[-3000:]}")
    return float(match.group(1))



def signature_one_at_a_time(ref, rows) -> None:
    """Each request alone through the served SavedModel signature (services.model_server)."""
    from services.model_server import ServedVersion

    served = ServedVersion(ref)
    for row in rows:
        served.predict([row])


def streaming_latency(registry, records, workdir, offer_url):
    """Land one file of 500 requests in a watched directory; time scoring and Parquet."""
    landing, out = os.path.join(workdir, "landing"), os.path.join(workdir, "stream_out")
    os.makedirs(landing)
    stop_after = 25.0
    thread = threading.Thread(target=credit_scoring.run, args=([
        "--streaming", "--input_dir", landing, "--registry", registry, "--output", out,
        "--offer_url", offer_url, "--poll_secs", "1", "--window_secs", "5",
        "--stop_after_secs", str(stop_after)],))
    thread.start()
    time.sleep(8)  # let the pipeline start polling
    requests = replay_requests(records, 500, datetime.datetime.now(datetime.UTC), 1, "lat")
    tmp = os.path.join(landing, ".batch.tmp")
    write_jsonl(requests, tmp)
    landed = datetime.datetime.now(datetime.UTC)
    os.rename(tmp, os.path.join(landing, "batch.jsonl"))
    thread.join()
    written = max(os.path.getmtime(os.path.join(d, f))
                  for d, _, fs in os.walk(os.path.join(out, "responses")) for f in fs)
    processed = ds.dataset(os.path.join(out, "responses"), partitioning="hive").to_table(
        columns=["processed_at"]).column("processed_at").to_pylist()
    to_scored = (max(processed) - landed).total_seconds()
    return to_scored, written - landed.timestamp()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--registry", default=None, help="default: train into a temp registry")
    parser.add_argument("--one_at_a_time_rows", type=int, default=1000)
    parser.add_argument("--skip_streaming", action="store_true")
    parser.add_argument("--baseline", default=BASELINE,
                        help="git revision whose pipeline runs beside (c) as (c0); '' skips it")
    args = parser.parse_args(argv)
    # Resolved now: a bench runs code in other folders too (a baseline checkout).
    args.registry = os.path.abspath(args.registry) if args.registry else None

    with tempfile.TemporaryDirectory() as workdir:
        registry = args.registry or os.path.join(workdir, "registry")
        if not model_registry.list_versions(registry, MODEL):
            train(MODEL, registry, DATA, command="bench/credit_throughput.py")
        ref = model_registry.resolve(registry, MODEL)
        records = read_data(GERMAN, DATA).records
        # 30 s apart, ending on 2026-11-01: any --rows stays inside the event-time window.
        end = datetime.datetime(2026, 11, 1, tzinfo=datetime.UTC)
        requests = replay_requests(records, args.rows,
                                   end - datetime.timedelta(seconds=30 * args.rows), 30)
        input_path = os.path.join(workdir, "requests.jsonl")
        write_jsonl(requests, input_path)
        fields = [{k: float(v) if isinstance(v, int) else v for k, v in r.items()
                   if k not in ("request_id", "event_time")} for r in requests]
        model = credit_model_handler(ref.path, KINDS).load_model()
        batch_size = 2048

        results = {}
        seconds, _ = timed(lambda: raw_model(model, fields, batch_size))
        results["a"] = args.rows / seconds
        seconds, counted = timed(lambda: minimal_beam(ref.path, fields))
        assert counted == args.rows, f"minimal pipeline scored {counted} of {args.rows}"
        results["b"] = args.rows / seconds
        results["c"] = args.rows / full_pipeline(registry, input_path,
                                                 os.path.join(workdir, "out_c"))
        results["c_nd"] = args.rows / full_pipeline(registry, input_path,
                                                    os.path.join(workdir, "out_cnd"),
                                                    extra=["--no_dedup"])
        if args.baseline:
            old_code = checkout(args.baseline, os.path.join(workdir, "baseline"))
            results["c0"] = args.rows / full_pipeline(
                registry, input_path, os.path.join(workdir, "out_c0"), code_dir=old_code)
        with running_offer_service(Faults()) as service:
            results["d"] = args.rows / full_pipeline(registry, input_path,
                                                     os.path.join(workdir, "out_d"), service.url)
            offer_calls = service.stats().get("calls", 0)
            if not args.skip_streaming:
                to_scored, to_parquet = streaming_latency(registry, records, workdir, service.url)
        n = args.one_at_a_time_rows
        signature_one_at_a_time(ref, fields[:10])  # load and warm up
        seconds, _ = timed(lambda: signature_one_at_a_time(ref, fields[:n]))
        results["e"] = n / seconds
        m = min(n, 300)
        seconds, _ = timed(lambda: [predict_scores(model, [f], KINDS) for f in fields[:m]])
        results["e_eager"] = m / seconds

    print(f"\nmachine: {platform.machine()}, {os.cpu_count()} cores, "
          f"{platform.python_implementation()} {platform.python_version()}")
    print(f"rows: {args.rows:,} (e: {n:,}, e': {m:,}); model batch {batch_size}; "
          f"offer calls in (d): {offer_calls}")
    labels = {"a": "raw model(batch)", "b": "Create -> RunInference -> Map",
              "c": "full pipeline, no offers", "c_nd": "the same with --no_dedup",
              "c0": f"same at {args.baseline}",
              "d": "full pipeline + offer API", "e": "one request at a time, signature",
              "e_eager": "one request at a time, eager Keras"}
    for key, label in labels.items():
        if key in results:
            print(f"  ({key}) {label:36s} {results[key]:>10,.0f} rows/s")
    print(f"  (c)/(a) = {results['c'] / results['a']:.3f}   goal >= 0.25; without the "
          f"deduplication shuffle {results['c_nd'] / results['a']:.3f}")
    if "c0" in results:
        print(f"  (c0)/(a) = {results['c0'] / results['a']:.3f}   (c)/(c0) = "
              f"{results['c'] / results['c0']:.1f}x")
    print(f"  (c)/(e) = {results['c'] / results['e']:.1f}   the pipeline against the fastest "
          f"per-request path")
    print(f"  (d)/(c) = {results['d'] / results['c']:.2f}")
    print(f"  (b)/(a) = {results['b'] / results['a']:.3f}")
    if not args.skip_streaming:
        print(f"  streaming: file landed -> rows scored {to_scored:.1f} s; "
              f"-> rows in Parquet {to_parquet:.1f} s (local runner writes at drain)")


if __name__ == "__main__":
    sys.exit(run_command(main))
