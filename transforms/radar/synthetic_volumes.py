"""Synthetic radar volumes with known per-gate truth, in a file the radar QC pipeline reads.

They are the ground truth for evaluating QC end to end (real volumes come without per-gate
truth).

A real decoded volume is the template: its geometry, coordinates and metadata are kept, the
dual-pol moments of a few of its sweeps are replaced by synthetic fields (``synthetic.py``) and
everything else is dropped. The volume is written as CF/Radial 2 NetCDF; the truth is the
removal mask of each sweep on the model grid, bit-packed like the sampled prediction rows, in a
Parquet file keyed by prediction id.

Also: a real volume as a single-polarization radar records it (``--single_pol_copy``): the
template's sweeps with reflectivity, velocity and spectrum width only, as ODIM_H5, for the
single-pol model's path (no truth; the real moments are kept).

Usage::

    python -m transforms.radar.synthetic_volumes \\
        --template ../shared/data/radar/KLBB20160601_150025_V06 \\
        --out_dir out/synthetic_radar --truth out/synthetic_radar_truth.parquet --count 2
    python -m transforms.radar.synthetic_volumes --single_pol_copy out/KLBB_single_pol.h5
"""

import argparse
import datetime
import os
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from models.exit_codes import run_command
from models.radar_qc.synthetic import synthetic_sweep
from models.radar_qc.vocabulary import BIO, CHANNELS, CLUTTER
from transforms.radar.reading import (
    N_AZIMUTH,
    N_RANGE,
    open_volume,
    regrid_indices,
    sweep_names,
)
from transforms.radar.volumes import volume_id, write_cfradial2

TRUTH_SCHEMA = pa.schema([
    pa.field("prediction_id", pa.string(), nullable=False),
    pa.field("mask_shape", pa.list_(pa.int32())),
    pa.field("mask_packed", pa.binary()),
    pa.field("label_time", pa.timestamp("us", tz="UTC")),
    pa.field("volume_id", pa.string()),
    pa.field("sweep_number", pa.int32()),
])


def dual_pol_sweeps(tree) -> list[str]:
    """Names of the template's sweeps that carry every model channel, in sweep order."""
    names = sorted(tree.children, key=lambda n: int(n.split("_")[-1]))
    return [n for n in names if all(c in tree[n].ds.data_vars for c in CHANNELS)]


def grid_mask(removed: np.ndarray, azimuths: np.ndarray) -> np.ndarray:
    """A native-ray removal mask on the model grid, as the pipeline regrids the moments."""
    out = np.zeros((N_AZIMUTH, N_RANGE), dtype=bool)
    gates = min(removed.shape[1], N_RANGE)
    out[:, :gates] = removed[regrid_indices(azimuths), :gates]
    return out


def synthetic_volume(template, seed: int, radar: str, volume_time: datetime.datetime,
                     n_sweeps: int = 3):
    """A volume like ``template`` with synthetic moments in ``n_sweeps`` dual-pol sweeps.

    Returns:
        (tree, masks): the xarray DataTree and, per sweep number of the new volume, its
        removal-mask truth on the model grid.
    """
    rng = np.random.default_rng(seed)
    chosen = dual_pol_sweeps(template)
    chosen = [chosen[i] for i in np.linspace(0, len(chosen) - 1, n_sweeps).astype(int)]
    tree = template.copy(deep=False)
    for name in list(tree.children):
        del tree[name]
    root = template["/"].to_dataset(inherit=False)
    root["time_coverage_start"] = volume_time.strftime("%Y-%m-%dT%H:%M:%SZ")
    root.attrs.update(instrument_name=radar, title="synthetic volume with known truth")
    tree.dataset = root
    masks = {}
    for number, name in enumerate(chosen):
        ds = template[name].to_dataset(inherit=False)
        ds = ds.drop_vars([v for v in ds.data_vars if ds[v].dims == ("azimuth", "range")])
        shape = (ds.sizes["azimuth"], ds.sizes["range"])
        data, labels = synthetic_sweep(rng, *shape)
        for channel, var in enumerate(CHANNELS):
            ds[var] = (("azimuth", "range"), data[..., channel])
        ds["sweep_number"] = number
        tree[f"sweep_{number}"] = ds
        masks[number] = grid_mask((labels == BIO) | (labels == CLUTTER), ds["azimuth"].values)
    return tree, masks


def truth_rows(radar: str, volume_time: datetime.datetime, masks: dict,
               label_time: datetime.datetime) -> list[dict]:
    """One truth row per sweep, keyed like the pipeline's sampled rows."""
    vid = volume_id(radar, volume_time)
    return [{"prediction_id": f"{vid}-s{number:02d}", "mask_shape": list(mask.shape),
             "mask_packed": np.packbits(mask).tobytes(), "label_time": label_time,
             "volume_id": vid, "sweep_number": number}
            for number, mask in sorted(masks.items())]


def write_synthetic_volumes(template_path: str, out_dir: str, truth_path: str, count: int = 2,
                            n_sweeps: int = 3, radar: str = "XSYN", seed: int = 11,
                            start: datetime.datetime | None = None) -> list[str]:
    """``count`` volumes six minutes apart into ``out_dir`` and their truth into one Parquet
    file; returns the volume paths."""
    start = start or datetime.datetime(2026, 9, 7, 12, 0, tzinfo=datetime.UTC)
    template = open_volume(template_path)
    os.makedirs(out_dir, exist_ok=True)
    paths, rows = [], []
    for i in range(count):
        volume_time = start + datetime.timedelta(minutes=6 * i)
        tree, masks = synthetic_volume(template, seed + i, radar, volume_time, n_sweeps)
        path = os.path.join(out_dir, f"{volume_id(radar, volume_time)}.nc")
        write_cfradial2(tree, path)
        paths.append(path)
        rows.extend(truth_rows(radar, volume_time, masks,
                               volume_time + datetime.timedelta(days=1)))
    pq.write_table(pa.Table.from_pylist(rows, schema=TRUTH_SCHEMA), truth_path)
    return paths


SINGLE_POL_MOMENTS = ("DBZH", "VRADH", "WRADH")


def write_single_pol_copy(template_path: str, path: str, sweeps: int = 4) -> str:
    """The template's first ``sweeps`` sweeps with reflectivity, velocity and spectrum width
    only (what a radar without dual polarization records), written as ODIM_H5 under the
    radar name ``<template radar>-SP`` (its outputs must not replace the original's)."""
    import xarray as xr
    import xradar

    template = open_volume(template_path)
    radar = str(template.attrs.get("instrument_name", "unknown"))
    nodes = {"/": template.to_dataset(inherit=False)}
    names = sweep_names(template)[:sweeps]
    for name in names:
        ds = template[name].to_dataset(inherit=False)
        drop = [v for v, var in ds.data_vars.items()
                if var.dims == ("azimuth", "range") and v not in SINGLE_POL_MOMENTS]
        nodes[f"/{name}"] = ds.drop_vars(drop)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    xradar.io.to_odim(xr.DataTree.from_dict(nodes), path, source=f"NOD:{radar.lower()}-sp")
    return path


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--template", default="../shared/data/radar/KLBB20160601_150025_V06")
    parser.add_argument("--single_pol_copy", default=None, metavar="PATH",
                        help="write the template as a single-pol ODIM_H5 volume to PATH "
                             "instead (no truth)")
    parser.add_argument("--out_dir", help="folder of the volumes (.nc)")
    parser.add_argument("--truth", help="Parquet file of the truth masks")
    parser.add_argument("--count", type=int, default=2)
    parser.add_argument("--sweeps", type=int, default=3)
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args(argv)
    if args.single_pol_copy:
        path = write_single_pol_copy(args.template, args.single_pol_copy)
        print(f"wrote {path}: {args.template} without its dual-polarization moments (ODIM_H5)")
        return
    if not (args.out_dir and args.truth):
        parser.error("--out_dir and --truth are required (or --single_pol_copy PATH)")
    paths = write_synthetic_volumes(args.template, args.out_dir, args.truth, args.count,
                                    args.sweeps, seed=args.seed)
    print(f"wrote {len(paths)} synthetic volumes to {args.out_dir} and their truth masks to "
          f"{args.truth}")


if __name__ == "__main__":
    sys.exit(run_command(main))
