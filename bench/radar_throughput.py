"""Radar QC throughput and memory, measured side by side on the same real volume in one run.

    decode        xradar decode + regrid of one KLBB volume (s)
    raw engine    the UNet on the volume's dual-pol sweeps, --sweeps_per_call at a time, on
                  ONNX Runtime (the pipeline's CPU engine) and on TensorFlow
    decode+infer  both back to back: the rate the pipeline is held to (sweeps/s)
    pipeline      python -m pipelines.radar_qc on --copies copies of the volume (plain, .gz,
                  .bz2 ...): decode, RunInference, mask, CF/Radial write, quicklook, Parquet;
                  in its own process, whose peak resident memory is read
    baseline      the same pipeline as the code was at --baseline (a git revision)
    one volume    the pipeline on one volume, end to end, against decode+infer of that volume

Pipeline times are the runs' own wall times (their closing summary), so interpreter start-up
and imports count for neither side.

Usage::

    python -m bench.radar_throughput [--registry registry] [--copies 3] [--baseline REV]

Not a test: it prints numbers, asserts nothing.
"""

import argparse
import bz2
import gzip
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time

from bench.baseline import BASELINE, MEASURE, ROOT, checkout
from models import registry as model_registry
from models.exit_codes import run_command
from models.radar_qc.handler import (
    DEFAULT_SWEEPS_PER_CALL,
    classify_sweeps,
    keras_probabilities,
    onnx_probabilities,
)
from transforms.radar.reading import DUAL_POL, open_volume
from transforms.radar.volumes import decode_volume

KLBB = os.path.join(ROOT, "..", "shared", "data", "radar", "KLBB20160601_150025_V06")


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


def run_pipeline(pattern: str, registry: str, out: str, code_dir: str = ROOT,
                 extra=()) -> tuple[float, int]:
    """(the run's wall time in s, its process's peak RSS in MiB)."""
    done = subprocess.run(
        [sys.executable, "-c", MEASURE, sys.executable, "-m", "pipelines.radar_qc",
         "--input", pattern, "--output", out, "--registry", registry, "--sample_rate", "1.0",
         *extra], cwd=code_dir, capture_output=True, text=True, check=False,
        env=dict(os.environ, PYTHONPATH=code_dir))
    match = re.search(r"run \S+: DONE in ([\d.]+) s", done.stdout)
    if done.returncode or not match:
        raise RuntimeError(f"radar pipeline in {code_dir} failed:\n{done.stdout[-2000:]}"
                           f"{done.stderr[-3000:]}")
    return float(match.group(1)), int(done.stdout.strip().splitlines()[-1]) // 1024



def timed(fn):
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--registry", default="registry")
    parser.add_argument("--volume", default=KLBB)
    parser.add_argument("--copies", type=int, default=3)
    parser.add_argument("--sweeps_per_call", type=int, default=DEFAULT_SWEEPS_PER_CALL)
    parser.add_argument("--baseline", default=BASELINE,
                        help="git revision whose pipeline runs beside; '' skips it")
    args = parser.parse_args(argv)
    # Resolved now: a bench runs code in other folders too (a baseline checkout).
    args.registry = os.path.abspath(args.registry) if args.registry else None
    args.volume = os.path.abspath(args.volume)

    import keras
    import onnxruntime as ort

    import models.radar_qc.model  # noqa: F401 - registers the preprocessing layer
    from models.radar_qc.engine import onnx_model, worker_threads

    ref = model_registry.resolve(args.registry, "radar_qc")
    source = (args.volume,)
    decode_secs, volume = timed(lambda: decode_volume(open_volume(args.volume), source))
    moments = volume.stacks[DUAL_POL]
    n = len(moments)
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = worker_threads(), 1
    session = ort.InferenceSession(onnx_model(ref.path, ref.manifest), options,
                                   providers=["CPUExecutionProvider"])
    engines = {"onnx": onnx_probabilities(session),
               "tensorflow": keras_probabilities(keras.models.load_model(ref.path))}
    infer_secs = {}
    for name, engine in engines.items():
        classify_sweeps(engine, moments[:1])  # warm-up: graph building is not throughput
        infer_secs[name], _ = timed(lambda e=engine: classify_sweeps(e, moments,
                                                                     args.sweeps_per_call))
    back_to_back = decode_secs + infer_secs["onnx"]

    with tempfile.TemporaryDirectory() as tmp:
        inputs = os.path.join(tmp, "in")
        os.makedirs(inputs)
        copies_of(args.volume, inputs, args.copies)
        many_secs, many_peak = run_pipeline(os.path.join(inputs, "*"), args.registry,
                                            os.path.join(tmp, "out"))
        single = os.path.join(tmp, "single")
        os.makedirs(single)
        shutil.copy(args.volume, single)
        one_secs, one_peak = run_pipeline(os.path.join(single, "*"), args.registry,
                                          os.path.join(tmp, "out1"))
        if args.baseline:
            old = checkout(args.baseline, os.path.join(tmp, "baseline"))
            old_secs, old_peak = run_pipeline(os.path.join(inputs, "*"), args.registry,
                                              os.path.join(tmp, "out_old"), old)

    rate = n * args.copies / many_secs
    print(f"\nmachine: {platform.machine()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}, model {ref.name} {ref.version} "
          f"({ref.manifest['architecture']}), ONNX Runtime threads {worker_threads()}")
    print(f"volume: {os.path.basename(args.volume)}, {n} dual-pol sweeps of "
          f"{moments.shape[1]}x{moments.shape[2]} gates, {args.sweeps_per_call} per engine call")
    print(f"decode one volume (xradar + regrid):       {decode_secs:6.2f} s")
    for name, secs in infer_secs.items():
        print(f"raw {name:10s} inference:               {n / secs:6.2f} sweeps/s "
              f"({secs:.2f} s per volume)")
    print(f"  onnx / tensorflow speed:                 "
          f"{infer_secs['tensorflow'] / infer_secs['onnx']:6.2f}x")
    print(f"decode + raw onnx, back to back:           {n / back_to_back:6.2f} sweeps/s")
    print(f"pipeline, {args.copies} volumes, everything:         {rate:6.2f} sweeps/s   "
          f"{rate / (n / back_to_back):.2f}x decode+infer (goal >= 0.85)")
    if args.baseline:
        old_rate = n * args.copies / old_secs
        print(f"pipeline at {args.baseline}, {args.copies} volumes:          {old_rate:6.2f} "
              f"sweeps/s   new/old {rate / old_rate:.2f}x; peak RSS {old_peak:,} MiB")
    print(f"peak RSS of the {args.copies}-volume run:              {many_peak:6,} MiB "
          f"(goal < 1,536)")
    print(f"one volume end to end:                     {one_secs:6.2f} s   "
          f"{one_secs / back_to_back:.2f}x decode+infer (goal <= 1.3); peak RSS "
          f"{one_peak:,} MiB")


if __name__ == "__main__":
    sys.exit(run_command(main))
