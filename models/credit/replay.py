"""Replay German credit applicants as credit requests (JSON Lines), for demos and benchmarks.

Usage::

    python -m models.credit.replay --data ../shared/data/credit/german.data --out requests.jsonl \\
        --count 5000 --start 2026-11-01T00:00:00+00:00 --spacing_secs 60
"""

import argparse
import datetime
import json

from models.credit.data import load_german


def replay_requests(records: list[dict], count: int, start: datetime.datetime,
                    spacing_secs: float = 60.0, id_prefix: str = "req") -> list[dict]:
    """``count`` requests cycling through ``records``, with ids and evenly spaced event times.

    Numbers that are whole are written as ints, as a client would send them.
    """
    requests = []
    for i in range(count):
        fields = {k: (int(v) if isinstance(v, float) and v.is_integer() else v)
                  for k, v in records[i % len(records)].items()}
        event_time = start + datetime.timedelta(seconds=i * spacing_secs)
        requests.append({"request_id": f"{id_prefix}-{i:07d}",
                         "event_time": event_time.isoformat(), **fields})
    return requests


def write_jsonl(requests: list[dict], path: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for request in requests:
            f.write(json.dumps(request) + "\n")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="../shared/data/credit/german.data")
    parser.add_argument("--out", required=True, help="JSON Lines file to write")
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--start", default="2026-11-01T00:00:00+00:00",
                        help="event time of the first request (ISO-8601 with zone)")
    parser.add_argument("--spacing_secs", type=float, default=60.0)
    parser.add_argument("--id_prefix", default="req")
    args = parser.parse_args(argv)
    records, _ = load_german(args.data)
    requests = replay_requests(records, args.count, datetime.datetime.fromisoformat(args.start),
                               args.spacing_secs, args.id_prefix)
    write_jsonl(requests, args.out)
    print(f"wrote {len(requests)} requests to {args.out}")


if __name__ == "__main__":
    main()
