"""Weak labels from real volumes: where the reference algorithms agree, a gate's class is
known well enough to train on.

For every dual-pol sweep of the given volumes, wradlib's fuzzy classification and the RHOHV
rule run on the sweep (``transforms.radar.reference``, the settings in
``<config>/evaluation/radar_reference.json``); gates both call weather get ``MET``, gates both
remove get ``NON_MET`` (biological or clutter/noise, which the references do not tell apart),
and gates where they disagree or there is no echo get ``NO_ECHO`` (weight 0). Training windows
are cut at random azimuths (wrapping across north) and ranges (weighted towards the radar).

The volumes whose labels a model saw are listed in its manifest (``weak_label_volumes``), so no
volume is scored by a model trained on its own labels (``pipelines.radar_reference`` refuses).

Usage (trains and publishes the dual-pol model, synthetic windows plus these)::

    python -m transforms.radar.weak_labels --registry registry \\
        --weak_labels ../shared/data/radar/nexrad_chunks_KLOT
"""

import argparse
import dataclasses
import logging
import os
import shlex
import sys

import numpy as np

from models.exit_codes import run_command
from models.radar_qc.vocabulary import MET, NO_ECHO, NON_MET
from transforms.radar import reference
from transforms.radar.reading import DUAL_POL, RadarReadError, open_volume, volume_source
from transforms.radar.volumes import decode_volume


def consensus_labels(masks: dict, echo: np.ndarray) -> np.ndarray:
    """uint8 labels of a sweep from the references' masks (``fuzzy``, ``rhohv``)."""
    fuzzy, rhohv = masks["fuzzy"], masks["rhohv"]
    labels = np.full(echo.shape, NO_ECHO, dtype=np.uint8)
    labels[echo & ~fuzzy & ~rhohv] = MET
    labels[echo & fuzzy & rhohv] = NON_MET
    return labels


@dataclasses.dataclass(frozen=True)
class LabelledSweep:
    """One dual-pol sweep on the model grid with the references' masks and its weak labels."""

    radar: str
    volume_id: str
    sweep_number: int
    elevation: float
    data: np.ndarray         # float32 (azimuth, range, 4), NaN = no echo
    masks: dict              # {"fuzzy", "rhohv"}: True = not weather
    labels: np.ndarray       # uint8 consensus labels (consensus_labels)
    range_km: np.ndarray     # range of each gate along the range axis


def labelled_sweeps(source, params) -> list[LabelledSweep]:
    """Every dual-pol sweep of one volume source (archive file, or ordered chunk paths)."""
    from transforms.radar.reading import GRID_GATE_M

    source = tuple(source)
    volume = decode_volume(open_volume(source[0] if len(source) == 1 else list(source)), source)
    try:
        out = []
        for i, key in enumerate(volume.role_keys(DUAL_POL)):
            data = volume.stacks[DUAL_POL][i]
            echo = ~np.isnan(data[..., 0])
            masks = reference.reference_masks(data, reference.sweep_velocity(
                volume.tree, key.sweep_number, key.elevation), params)
            out.append(LabelledSweep(
                key.radar, key.volume_id, key.sweep_number, key.elevation, data, masks,
                consensus_labels(masks, echo),
                (key.first_gate_m + GRID_GATE_M * np.arange(data.shape[1])) / 1000.0))
        return out
    finally:
        volume.tree.close()


def load_sweeps(sources, params) -> tuple[list[LabelledSweep], list[str]]:
    """Labelled dual-pol sweeps of every volume source, and one line for each volume left out
    (no dual-pol sweep, such as a legacy volume, or not readable)."""
    sweeps, skipped = [], []
    for source in sources:
        source = tuple(source)
        name = os.path.basename(os.path.dirname(source[0]) if len(source) > 1 else source[0])
        try:
            found = labelled_sweeps(source, params)
        except RadarReadError as error:
            skipped.append(f"{name}: {error}")
            continue
        if not found:
            skipped.append(f"{name}: no dual-pol sweep")
        sweeps += found
    return sweeps, skipped


def weak_windows(sweeps, count: int, n_azimuth: int, n_range: int, seed: int,
                 groups=None):
    """``count`` windows cut from the labelled sweeps (azimuth wraps; first gate drawn as
    ``max_gate * u**2``, towards the radar where most non-weather echo is).

    Args:
        groups: one name per sweep (its radar, say); when given, each window first draws a
            group, each equally likely, then a sweep of it, so a radar with many sweeps does
            not outweigh one with few. Else every sweep is equally likely.

    Returns:
        (data float32 (count, n_azimuth, n_range, 4), labels uint8 (count, n_azimuth, n_range)).
    """
    rng = np.random.default_rng(seed)
    data = np.empty((count, n_azimuth, n_range, sweeps[0][0].shape[-1]), dtype=np.float32)
    labels = np.empty((count, n_azimuth, n_range), dtype=np.uint8)
    members = None
    if groups is not None:
        names = sorted(set(groups))
        members = [[j for j, g in enumerate(groups) if g == name] for name in names]
    for i in range(count):
        if members is None:
            sweep, sweep_labels = sweeps[rng.integers(len(sweeps))]
        else:
            group = members[rng.integers(len(members))]
            sweep, sweep_labels = sweeps[group[rng.integers(len(group))]]
        rays = (rng.integers(sweep.shape[0]) + np.arange(n_azimuth)) % sweep.shape[0]
        first = int((sweep.shape[1] - n_range) * rng.random() ** 2)
        data[i] = sweep[rays, first:first + n_range]
        labels[i] = sweep_labels[rays, first:first + n_range]
    return data, labels


def weak_training_windows(sources, count: int, seed: int, config_path: str | None = None
                          ) -> dict:
    """``count`` windows of the volumes' sweeps with their weak labels, as
    ``models.radar_qc.train.train`` takes them ({"data", "labels", "volume_ids"}). Volumes
    without dual-pol sweeps are left out, each with a printed line.

    Raises:
        RadarReadError: none of the volumes has a dual-pol sweep.
    """
    from models.radar_qc.train import TRAIN_WINDOW

    params, _ = reference.load_parameters(config_path)
    sweeps, skipped = load_sweeps(sources, params)
    for line in skipped:
        print(f"  weak labels: left out {line}", flush=True)
    if not sweeps:
        raise RadarReadError("--weak_labels: no volume given has a dual-pol sweep "
                             "(the references need ZDR, RHOHV and PHIDP)")
    data, labels = weak_windows([(s.data, s.labels) for s in sweeps], count, *TRAIN_WINDOW,
                                seed=seed + 17)
    return {"data": data, "labels": labels,
            "volume_ids": sorted({s.volume_id for s in sweeps})}


def volume_argument(text: str) -> tuple[str, ...]:
    """A --weak_labels value: an archive file, or a folder of one volume's real-time chunks."""
    try:
        return volume_source(text)
    except RadarReadError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def parse_arguments(argv=None) -> argparse.Namespace:
    """The CLI's options; ``weak_windows`` resolved to its default (twice the synthetic)."""
    from models.radar_qc.train import add_training_arguments

    parser = argparse.ArgumentParser(
        prog="python -m transforms.radar.weak_labels",
        description="Train the dual-pol radar QC UNet on synthetic windows plus real sweeps "
                    "labelled by the reference algorithms' consensus, and publish it")
    add_training_arguments(parser)
    parser.add_argument("--weak_labels", type=volume_argument, action="append", required=True,
                        metavar="VOLUME",
                        help="a real volume (archive file, or folder of its chunks) whose "
                             "reference consensus joins the training; repeatable")
    parser.add_argument("--weak_windows", type=int, default=0,
                        help="windows cut from them (default: twice --train_windows; with "
                             "as many the model underfits the real labels)")
    parser.add_argument("--weak_weather_weight", type=float, default=1.0,
                        help="loss weight of a gate both references call weather")
    parser.add_argument("--reference_config", default=None,
                        help="the references' settings (default "
                             "<config>/evaluation/radar_reference.json)")
    # More epochs than synthetic-only training: the real windows take longer to fit.
    parser.set_defaults(epochs=8)
    args = parser.parse_args(argv)
    if args.polarization != "dual":
        parser.error("weak labels come from dual-pol references: --polarization dual")
    if args.weak_windows < 0:
        parser.error("--weak_windows: a count of windows, 0 or more")
    args.weak_windows = args.weak_windows or 2 * args.train_windows
    return args


def main(argv=None) -> None:
    from models.radar_qc.train import print_published, train

    args = parse_arguments(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    weak = weak_training_windows(args.weak_labels, args.weak_windows, args.seed,
                                 args.reference_config)
    # Quoted as a shell would need it: the retrain command of the rules file repeats it.
    command = shlex.join(["python", "-m", "transforms.radar.weak_labels",
                          *(argv or sys.argv[1:])])
    print_published(train(args.registry, args.seed, args.train_windows, args.holdout_windows,
                          args.epochs, args.base_filters, args.depth, command=command,
                          weak=weak, weak_weather_weight=args.weak_weather_weight,
                          randomise=args.domain_randomise))


if __name__ == "__main__":
    sys.exit(run_command(main))
