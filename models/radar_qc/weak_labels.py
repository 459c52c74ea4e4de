"""Weak labels from real volumes: where the reference algorithms agree, a gate's class is
known well enough to train on.

For every dual-pol sweep of the given volumes, wradlib's fuzzy classification and the RHOHV
rule run on the sweep (``transforms.radar.reference``, the settings in
``config/evaluation/radar_reference.json``); gates both call weather get ``MET``, gates both
remove get ``NON_MET`` (biological or clutter/noise, which the references do not tell apart),
and gates where they disagree or there is no echo get ``NO_ECHO`` (weight 0). Training windows
are cut at random azimuths (wrapping across north) and ranges (weighted towards the radar).

The volumes whose labels a model saw are listed in its manifest (``weak_label_volumes``), so no
volume is scored by a model trained on its own labels (``pipelines.radar_reference`` refuses).
"""

import numpy as np

from models.radar_qc.vocabulary import MET, NO_ECHO

# The weak label for "not weather, class unknown": trained as P(biological) + P(clutter).
NON_MET = 3


def consensus_labels(masks: dict, echo: np.ndarray) -> np.ndarray:
    """uint8 labels of a sweep from the references' masks (``fuzzy``, ``rhohv``)."""
    fuzzy, rhohv = masks["fuzzy"], masks["rhohv"]
    labels = np.full(echo.shape, NO_ECHO, dtype=np.uint8)
    labels[echo & ~fuzzy & ~rhohv] = MET
    labels[echo & fuzzy & rhohv] = NON_MET
    return labels


def volume_sweeps_with_labels(sources, params) -> tuple[list, list[str]]:
    """(data, labels) of every dual-pol sweep of the volumes, and their volume ids."""
    from transforms.radar import reference
    from transforms.radar.reading import DUAL_POL, open_volume
    from transforms.radar.volumes import decode_volume

    sweeps, volume_ids = [], []
    for source in sources:
        source = tuple(source)
        volume = decode_volume(open_volume(source[0] if len(source) == 1 else list(source)),
                               source)
        volume_ids.append(volume.first.volume_id)
        for i, key in enumerate(volume.role_keys(DUAL_POL)):
            data = volume.stacks[DUAL_POL][i]
            echo = ~np.isnan(data[..., 0])
            masks = reference.reference_masks(data, reference.sweep_velocity(
                volume.tree, key.sweep_number, key.elevation), params)
            sweeps.append((data, consensus_labels(masks, echo)))
        volume.tree.close()
    return sweeps, volume_ids


def weak_windows(sweeps, count: int, n_azimuth: int, n_range: int, seed: int):
    """``count`` windows cut from the labelled sweeps (azimuth wraps; first gate drawn as
    ``max_gate * u**2``, towards the radar where most non-weather echo is).

    Returns:
        (data float32 (count, n_azimuth, n_range, 4), labels uint8 (count, n_azimuth, n_range)).
    """
    rng = np.random.default_rng(seed)
    data = np.empty((count, n_azimuth, n_range, sweeps[0][0].shape[-1]), dtype=np.float32)
    labels = np.empty((count, n_azimuth, n_range), dtype=np.uint8)
    for i in range(count):
        sweep, sweep_labels = sweeps[rng.integers(len(sweeps))]
        rays = (rng.integers(sweep.shape[0]) + np.arange(n_azimuth)) % sweep.shape[0]
        first = int((sweep.shape[1] - n_range) * rng.random() ** 2)
        data[i] = sweep[rays, first:first + n_range]
        labels[i] = sweep_labels[rays, first:first + n_range]
    return data, labels
