"""Serving benchmarks, side by side in one run, traffic only to 127.0.0.1, bounded in count.

1. The serving function (services.model_server, 1 worker): predictions/s and p50/p95/p99 latency
   of one-instance requests at 1, 8 and 32 concurrent clients.
2. The offers API end to end (validate, score, rules, the stand-in bank at 2 ms) at a fixed
   request rate: p50/p95/p99 latency and status counts.
3. The credit batch pipeline with the model in-process against the same pipeline calling the
   serving function (--model_endpoint): rows/s of each.

Usage::

    python -m bench.serving [--registry registry] [--requests 2000]
    python -m bench.serving --offers_url http://127.0.0.1:8600 --rate 50 --count 300  # load only
"""

import argparse
import concurrent.futures
import datetime
import json
import os
import platform
import sys
import tempfile
import threading
import time

import numpy as np
import requests

from models.exit_codes import run_command

DATA = os.path.join(os.environ.get("BEAMLINE_DATA", "../shared/data"), "credit", "german.data")
MODEL = "credit_german"


def percentiles(latencies_ms) -> str:
    p50, p95, p99 = np.percentile(latencies_ms, [50, 95, 99])
    return f"p50 {p50:6.1f} ms  p95 {p95:6.1f} ms  p99 {p99:6.1f} ms"


def offers_load(url: str, bodies: list[bytes], rate: float, deadline_ms: int = 2000) -> dict:
    """Send ``bodies`` at ``rate`` requests/s (each on its own thread, so a slow answer does
    not slow the schedule); returns latencies and status counts."""
    latencies, statuses, lock = [], {}, threading.Lock()

    def send(body):
        started = time.perf_counter()
        try:
            status = requests.post(url, data=body, timeout=10,
                                   headers={"X-Deadline-Ms": str(deadline_ms),
                                            "Content-Type": "application/json"}).status_code
        except requests.RequestException:
            status = "error"
        with lock:
            latencies.append((time.perf_counter() - started) * 1000)
            statuses[status] = statuses.get(status, 0) + 1

    threads = []
    start = time.perf_counter()
    for i, body in enumerate(bodies):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        thread = threading.Thread(target=send, args=(body,))
        thread.start()
        threads.append(thread)
    for thread in threads:
        thread.join()
    return {"latencies": latencies, "statuses": statuses,
            "seconds": time.perf_counter() - start}


def applicant_bodies(count: int, prefix: str, data: str = DATA) -> list[bytes]:
    from models.credit.dataset import load_dataset, read_data
    from models.credit.replay import replay_requests

    records = read_data(load_dataset(MODEL), data).records
    start = datetime.datetime(2026, 11, 20, tzinfo=datetime.UTC)
    return [json.dumps(r).encode() for r in replay_requests(records, count, start, 1, prefix)]


def serving_function(url: str, bodies: list[dict], clients: int) -> tuple[float, list]:
    """(predictions/s, latencies) of one-instance requests from ``clients`` threads."""
    session_local = threading.local()

    def one(body):
        session = getattr(session_local, "s", None) or requests.Session()
        session_local.s = session
        started = time.perf_counter()
        answer = session.post(f"{url}/v1/models/{MODEL}:predict", json={"instances": [body]},
                              timeout=30)
        answer.raise_for_status()
        return (time.perf_counter() - started) * 1000

    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        latencies = list(pool.map(one, bodies))
    return len(bodies) / (time.perf_counter() - start), latencies


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--registry", default=None, help="default: train into a temp one")
    parser.add_argument("--requests", type=int, default=2000,
                        help="requests per serving-function and pipeline measurement")
    parser.add_argument("--offers_url", default=None,
                        help="only send --count requests at --rate to this offers API")
    parser.add_argument("--rate", type=float, default=50.0, help="offers API requests/s")
    parser.add_argument("--count", type=int, default=500, help="offers API requests")
    parser.add_argument("--data", default=DATA, help="german.data (applicants to replay)")
    args = parser.parse_args(argv)
    # Resolved now: a bench runs code in other folders too (a baseline checkout).
    args.registry = os.path.abspath(args.registry) if args.registry else None
    args.data = os.path.abspath(args.data)
    if args.offers_url:
        url = args.offers_url.rstrip("/") + "/v1/offers"
        offers_load(url, applicant_bodies(10, "warm-up", args.data), 10)  # load and connect
        result = offers_load(url, applicant_bodies(args.count, "online", args.data), args.rate)
        print(f"offers API: {args.count} requests at {args.rate:g}/s: "
              f"{percentiles(result['latencies'])}; statuses {result['statuses']}")
        return

    from models import registry as model_registry
    from models.credit.train import train
    from pipelines import credit_scoring
    from services.bank_offers import Faults, running_offer_service
    from services.processes import running_service

    with tempfile.TemporaryDirectory() as workdir:
        registry = args.registry or os.path.join(workdir, "registry")
        if not model_registry.list_versions(registry, MODEL):
            train(MODEL, registry, args.data, command="bench/serving.py")
        bodies = [json.loads(b) for b in applicant_bodies(args.requests, "bench", args.data)]
        instances = [{k: v for k, v in b.items() if k not in ("request_id", "event_time")}
                     for b in bodies]
        with running_service("services.model_server", "--registry", registry) as url:
            serving_function(url, instances[:50], 4)  # warm up: load the version
            rows = []
            for clients in (1, 8, 32):
                rate, latencies = serving_function(url, instances, clients)
                rows.append((clients, rate, latencies))

            with running_offer_service(Faults(latency_ms=2.0)) as bank, running_service(
                    "services.offers_api", "--registry", registry, "--offer_url", bank.url,
                    "--output", os.path.join(workdir, "online")) as offers_url:
                offers_load(f"{offers_url}/v1/offers",
                            applicant_bodies(20, "warm", args.data), 20)
                offers = offers_load(f"{offers_url}/v1/offers",
                                     applicant_bodies(args.count, "online", args.data),
                                     args.rate)

            with open(os.path.join(workdir, "requests.jsonl"), "w", encoding="utf-8") as f:
                f.writelines(json.dumps(b) + "\n" for b in bodies)
            common = ["--input", os.path.join(workdir, "requests.jsonl"), "--registry",
                      registry, "--sample_rate", "0.1"]
            started = time.perf_counter()
            credit_scoring.run([*common, "--output", os.path.join(workdir, "local")])
            local = args.requests / (time.perf_counter() - started)
            started = time.perf_counter()
            credit_scoring.run([*common, "--output", os.path.join(workdir, "remote"),
                                "--model_endpoint", url])
            remote = args.requests / (time.perf_counter() - started)

    print(f"\nmachine: {platform.machine()}, {os.cpu_count()} cores, "
          f"{platform.python_implementation()} {platform.python_version()}")
    print(f"serving function (own process, 1 worker, one instance per request, "
          f"{args.requests} requests):")
    for clients, rate, latencies in rows:
        print(f"  {clients:>2} clients: {rate:7.0f} predictions/s  {percentiles(latencies)}")
    print(f"offers API (own process, {args.count} requests at {args.rate:g}/s, bank stand-in "
          f"at 2 ms): "
          f"{percentiles(offers['latencies'])}; statuses {offers['statuses']}")
    print(f"credit pipeline, {args.requests} requests: in-process {local:,.0f} rows/s, "
          f"remote model {remote:,.0f} rows/s, remote/in-process = {remote / local:.2f}")


if __name__ == "__main__":
    sys.exit(run_command(main))
