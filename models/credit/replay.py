"""Replay a configured data set's applicants as credit requests (JSON Lines), for demos and
benchmarks.

Usage::

    python -m models.credit.replay --config credit_german --out requests.jsonl \\
        --count 5000 --start 2026-11-01T00:00:00+00:00 --spacing_secs 60
"""

import argparse
import datetime
import json
import sys

from models.config import ConfigError
from models.credit.dataset import (
    DataError,
    add_dataset_arguments,
    load_dataset,
    read_data,
    resolve_data_path,
)
from models.exit_codes import run_command


def client_value(value):
    """A field as a client would send it: whole numbers as ints, missing as null."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def replay_requests(records: list[dict], count: int, start: datetime.datetime,
                    spacing_secs: float = 60.0, id_prefix: str = "req") -> list[dict]:
    """``count`` requests cycling through ``records``, with ids and evenly spaced event times."""
    requests = []
    for i in range(count):
        fields = {k: client_value(v) for k, v in records[i % len(records)].items()}
        event_time = start + datetime.timedelta(seconds=i * spacing_secs)
        requests.append({"request_id": f"{id_prefix}-{i:07d}",
                         "event_time": event_time.isoformat(), **fields})
    return requests


def write_jsonl(requests: list[dict], path: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for request in requests:
            f.write(json.dumps(request) + "\n")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_dataset_arguments(parser)
    parser.add_argument("--out", required=True, help="JSON Lines file to write")
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--start", default="2026-11-01T00:00:00+00:00",
                        help="event time of the first request (ISO-8601 with zone)")
    parser.add_argument("--spacing_secs", type=float, default=60.0)
    parser.add_argument("--id_prefix", default="req")
    args = parser.parse_args(argv)
    try:
        dataset = load_dataset(args.config)
        loaded = read_data(dataset, resolve_data_path(dataset, args.data))
    except (ConfigError, DataError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    requests = replay_requests(loaded.records, args.count,
                               datetime.datetime.fromisoformat(args.start), args.spacing_secs,
                               args.id_prefix)
    write_jsonl(requests, args.out)
    print(f"wrote {len(requests)} {dataset.model_name} requests to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(run_command(main))
