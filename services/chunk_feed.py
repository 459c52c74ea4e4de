"""Replays a real-time NEXRAD chunk set into a landing directory, one chunk at a time.

Stands in for the real-time chunk bucket (``<bucket>/<RADAR>/<volume>/<chunk>``): each chunk
appears complete (written beside the landing directory, then renamed into it), in the order
given, ``delay_secs`` apart.

Usage::

    python -m services.chunk_feed --chunks ../shared/data/radar/nexrad_chunks_KLOT \\
        --landing out/landing_chunks --radar KLOT --delay_secs 0.2
"""

import argparse
import os
import random
import shutil
import sys
import time

from models.exit_codes import run_command


def chunk_files(folder: str) -> list[str]:
    """The chunk files of a folder in name order (which is sequence order within a volume)."""
    return sorted(os.path.join(folder, n) for n in os.listdir(folder) if not n.startswith("."))


def feed_chunks(paths: list[str], landing: str, radar: str, delay_secs: float = 0.0,
                shuffle_seed: int | None = None) -> list[str]:
    """Copy chunks into ``<landing>/<radar>/``, each appearing whole; returns the new paths.

    Args:
        paths: chunk files to deliver.
        landing: the watched directory.
        radar: radar id (the sub-folder).
        delay_secs: pause between chunks.
        shuffle_seed: deliver in a seeded random order (real buckets do not promise order).
    """
    target_dir = os.path.join(landing, radar)
    staging = f"{landing.rstrip(os.sep)}.staging"
    os.makedirs(target_dir, exist_ok=True)
    os.makedirs(staging, exist_ok=True)
    order = list(paths)
    if shuffle_seed is not None:
        random.Random(shuffle_seed).shuffle(order)
    delivered = []
    for path in order:
        staged = os.path.join(staging, os.path.basename(path))
        shutil.copyfile(path, staged)
        final = os.path.join(target_dir, os.path.basename(path))
        os.replace(staged, final)
        delivered.append(final)
        if delay_secs:
            time.sleep(delay_secs)
    return delivered


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--chunks", required=True, help="folder holding one volume's chunks")
    parser.add_argument("--landing", required=True, help="the watched landing directory")
    parser.add_argument("--radar", required=True, help="radar id, e.g. KLOT")
    parser.add_argument("--delay_secs", type=float, default=0.2, help="pause between chunks")
    parser.add_argument("--shuffle_seed", type=int, default=None,
                        help="deliver in a seeded random order")
    args = parser.parse_args(argv)
    delivered = feed_chunks(chunk_files(args.chunks), args.landing, args.radar,
                            args.delay_secs, args.shuffle_seed)
    print(f"delivered {len(delivered)} chunks to {os.path.join(args.landing, args.radar)}")


if __name__ == "__main__":
    sys.exit(run_command(main))
