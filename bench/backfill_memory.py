"""Peak memory of a credit backfill as the row count doubles: it must stay flat.

Generates N and 2N requests of one day (default N = 1,000,000), replayed from the German
data, and runs the credit pipeline over each (pinned model version, offer step off, sampled
predictions at 10 %), with ``--no_dedup`` (a backfill of requests deduplicated when first
scored) and with deduplication, each in its own process, reading its peak resident memory. The
Parquet sink streams each bundle into files of at most ``--max_rows_per_file`` rows, so a
worker holds a row group per open file, never a partition.

Usage::

    python -m bench.backfill_memory [--rows 1000000] [--registry registry]

Not a test: it prints numbers, asserts nothing.
"""

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile

import pyarrow.dataset as ds

from bench.baseline import MEASURE, ROOT
from models import registry as model_registry
from models.credit.dataset import load_dataset, read_data
from models.credit.replay import replay_requests
from models.credit.train import train
from models.exit_codes import run_command

DATA = "../shared/data/credit/german.data"
MODEL = "credit_german"
FILES = 8


def write_requests(records, count: int, folder: str) -> str:
    """``count`` requests spread over one day, in FILES JSON Lines files; returns the glob."""
    os.makedirs(folder)
    start = datetime.datetime(2026, 11, 1, tzinfo=datetime.UTC)
    per_file = -(-count // FILES)
    for k in range(FILES):
        n = min(per_file, count - k * per_file)
        requests = replay_requests(records, n, start + datetime.timedelta(
            seconds=k * per_file * 86400 / count), 86400 / count, f"bf{k}")
        with open(os.path.join(folder, f"part-{k}.jsonl"), "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r) + "\n" for r in requests)
    return os.path.join(folder, "*.jsonl")


def run_backfill(registry: str, pattern: str, out: str, version: str, dedup: bool
                 ) -> tuple[float, int]:
    """(run seconds from the pipeline's summary, peak RSS in MiB) of one backfill run."""
    done = subprocess.run(
        [sys.executable, "-c", MEASURE, sys.executable, "-m", "pipelines.credit_scoring",
         "--input", pattern, "--registry", registry, "--output", out, "--model_version",
         version, "--run_mode", "backfill", "--run_id", f"bench-backfill-{version}",
         "--sample_rate", "0.1", *([] if dedup else ["--no_dedup"])],
        cwd=ROOT, capture_output=True, text=True, check=False)
    match = re.search(r"run \S+: DONE in ([\d.]+) s", done.stdout)
    if done.returncode or not match:
        raise RuntimeError(f"backfill failed:\n{done.stdout[-2000:]}{done.stderr[-3000:]}")
    peak_kib = int(done.stdout.strip().splitlines()[-1])
    return float(match.group(1)), peak_kib // 1024


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="N; 2N runs too")
    parser.add_argument("--registry", default=None, help="default: train into a temp registry")
    args = parser.parse_args(argv)
    # Resolved now: a bench runs code in other folders too (a baseline checkout).
    args.registry = os.path.abspath(args.registry) if args.registry else None

    with tempfile.TemporaryDirectory() as workdir:
        registry = args.registry or os.path.join(workdir, "registry")
        if not model_registry.list_versions(registry, MODEL):
            train(MODEL, registry, DATA, command="bench/backfill_memory.py")
        version = model_registry.resolve(registry, MODEL).version
        records = read_data(load_dataset(MODEL), DATA).records
        results = []
        for count in (args.rows, 2 * args.rows):
            pattern = write_requests(records, count, os.path.join(workdir, f"in{count}"))
            for dedup in (False, True):
                out = os.path.join(workdir, f"out{count}-{dedup}")
                seconds, peak = run_backfill(registry, pattern, out, version, dedup)
                responses = ds.dataset(os.path.join(
                    out, "backfills", f"bench-backfill-{version}", "responses"),
                    partitioning="hive")
                results.append((count, dedup, seconds, peak, responses.count_rows(),
                                len(responses.files)))
                shutil.rmtree(out)
            shutil.rmtree(os.path.dirname(pattern))

    print(f"\nmachine: {platform.machine()}, {os.cpu_count()} cores, "
          f"{platform.python_implementation()} {platform.python_version()}")
    for count, dedup, seconds, peak, rows, files in results:
        print(f"  {count:>10,} requests, {'deduplicated' if dedup else '--no_dedup  '}: "
              f"{seconds:6.1f} s ({count / seconds:,.0f} rows/s), peak RSS {peak:,} MiB, "
              f"{rows:,} responses in {files} files")
    peaks = {(count, dedup): peak for count, dedup, _, peak, _, _ in results}
    n1, n2 = args.rows, 2 * args.rows
    for dedup in (False, True):
        print(f"  peak memory at {n2:,} / at {n1:,}, "
              f"{'deduplicated' if dedup else '--no_dedup'}: "
              f"{peaks[(n2, dedup)] / peaks[(n1, dedup)]:.2f}   goal: flat (about 1.0) for a "
              f"backfill of deduplicated requests; the deduplication shuffle holds the run's "
              f"requests on the local runner")


if __name__ == "__main__":
    sys.exit(run_command(main))
