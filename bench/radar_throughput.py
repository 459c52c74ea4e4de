"""Radar QC throughput, measured side by side on the same real sweeps in one run.

    decode      xradar decode + regrid of one KLBB volume (s)
    raw model   model(batch) on the volume's dual-pol sweeps, batches of --max_batch_size
    pipeline    python -m pipelines.radar_qc on --copies copies of the volume (plain, .gz,
                .bz2 ...): decode, RunInference, mask, CF/Radial write, quicklook, Parquet
    one volume  the same pipeline on one volume, end to end (s)
    peak RSS    of this process, which runs the DirectRunner in-process

Usage::

    python -m bench.radar_throughput [--registry registry] [--copies 3]

Not a test: it prints numbers, asserts nothing.
"""

import argparse
import bz2
import gzip
import os
import platform
import resource
import shutil
import tempfile
import time

import numpy as np

from models import registry as model_registry
from pipelines import radar_qc
from transforms.radar.reading import open_volume, volume_sweeps

KLBB = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "radar",
                    "KLBB20160601_150025_V06")


def copies_of(volume: str, folder: str, count: int) -> list[str]:
    """``count`` copies of a volume under distinct names, cycling plain, .gz, .bz2."""
    with open(volume, "rb") as f:
        data = f.read()
    paths = []
    for i in range(count):
        kind = ("", ".gz", ".bz2")[i % 3]
        path = os.path.join(folder, f"{os.path.basename(volume)}_{i}{kind}")
        opener = {"": open, ".gz": gzip.open, ".bz2": bz2.open}[kind]
        with opener(path, "wb") as f:
            f.write(data)
        paths.append(path)
    return paths


def run_pipeline(pattern: str, registry: str, out: str, max_batch_size: int) -> float:
    started = time.perf_counter()
    radar_qc.run(["--input", pattern, "--output", out, "--registry", registry,
                  "--sample_rate", "1.0", "--max_batch_size", str(max_batch_size)])
    return time.perf_counter() - started


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--registry", default="registry")
    parser.add_argument("--volume", default=KLBB)
    parser.add_argument("--copies", type=int, default=3)
    parser.add_argument("--max_batch_size", type=int, default=4)
    args = parser.parse_args(argv)

    import keras

    from models.radar_qc.model import predict_classes

    ref = model_registry.resolve(args.registry, "radar_qc")
    started = time.perf_counter()
    sweeps, _ = volume_sweeps(open_volume(args.volume))
    decode_secs = time.perf_counter() - started
    moments = np.stack([s.data for s in sweeps])

    model = keras.models.load_model(ref.path)
    predict_classes(model, moments[:1])  # warm-up: graph tracing is not throughput
    started = time.perf_counter()
    predict_classes(model, moments, batch_size=args.max_batch_size)
    raw_secs = time.perf_counter() - started
    raw_rate = len(sweeps) / raw_secs

    with tempfile.TemporaryDirectory() as tmp:
        inputs = os.path.join(tmp, "in")
        os.makedirs(inputs)
        copies_of(args.volume, inputs, args.copies)
        pipeline_secs = run_pipeline(os.path.join(inputs, "*"), args.registry,
                                     os.path.join(tmp, "out"), args.max_batch_size)
        single = os.path.join(tmp, "single")
        os.makedirs(single)
        shutil.copy(args.volume, single)
        one_volume_secs = run_pipeline(os.path.join(single, "*"), args.registry,
                                       os.path.join(tmp, "out1"), args.max_batch_size)
    pipeline_rate = len(sweeps) * args.copies / pipeline_secs
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    print(f"\nmachine: {platform.machine()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}, model {ref.name} {ref.version} "
          f"({ref.manifest['architecture']})")
    print(f"volume: {os.path.basename(args.volume)}, {len(sweeps)} dual-pol sweeps of "
          f"{moments.shape[1]}x{moments.shape[2]} gates")
    print(f"decode one volume (xradar + regrid):      {decode_secs:6.2f} s")
    print(f"raw model(batch of {args.max_batch_size}):                 "
          f"{raw_rate:6.2f} sweeps/s")
    print(f"pipeline, {args.copies} volumes, everything:        {pipeline_rate:6.2f} sweeps/s"
          f"   ratio to raw model {pipeline_rate / raw_rate:.2f}")
    print(f"one volume end to end (pipeline run):     {one_volume_secs:6.2f} s")
    print(f"peak resident memory of this process:     {peak_mb:6.0f} MB")


if __name__ == "__main__":
    main()
