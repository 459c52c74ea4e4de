"""Quicklook PNG of a QC'd volume: raw and QC'd reflectivity of the lowest sweep and the class
map the model gave it (weather, biological, clutter/noise), side by side.

Polar gates are drawn on a Cartesian image by nearest gate (a lookup, not a mesh of 1.3 M
quadrilaterals), which keeps a quicklook well under a second.
"""

import io
import os

import numpy as np
from apache_beam.io.filesystems import FileSystems

from models.radar_qc.vocabulary import BIO, CLUTTER, MET
from transforms.radar.reading import N_AZIMUTH, regrid_indices
from transforms.radar.volumes import QC_CLASS

MAX_RANGE_KM = 230.0
PIXELS = 460
DBZ_LIMITS = (-10.0, 70.0)
# Class map colours: weather green, biological amber, clutter / noise magenta; no echo blank.
CLASS_COLOURS = {MET: ("weather", "#2e9e44"), BIO: ("biological", "#f0a30a"),
                 CLUTTER: ("clutter / noise", "#c2185b")}


def cartesian(values: np.ndarray, azimuths: np.ndarray, ranges_m: np.ndarray,
              max_range_km: float = MAX_RANGE_KM, pixels: int = PIXELS) -> np.ndarray:
    """A (pixels, pixels) image, north up, of a (rays, gates) field; NaN outside coverage."""
    axis = np.linspace(-max_range_km, max_range_km, pixels)
    x, y = np.meshgrid(axis, axis[::-1])
    distance_m = np.hypot(x, y) * 1000.0
    cells = (np.degrees(np.arctan2(x, y)) % 360.0 / (360.0 / N_AZIMUTH)).astype(int) % N_AZIMUTH
    rays = regrid_indices(azimuths)[cells]
    spacing = float(ranges_m[1] - ranges_m[0])
    gates = np.rint((distance_m - ranges_m[0]) / spacing).astype(int)
    inside = (gates >= 0) & (gates < values.shape[1])
    image = np.full(x.shape, np.nan, dtype=np.float32)
    image[inside] = values[rays[inside], gates[inside]]
    return image


def quicklook_png(raw, qc, title: str) -> bytes:
    """PNG bytes: three panels, raw and QC'd DBZH with a shared colour scale, and the class
    map of the sweep (``QC_CLASS``).

    Args:
        raw: the lowest sweep as decoded (xarray Dataset with DBZH, azimuth, range).
        qc: the same sweep after QC (with its QC_CLASS variable).
        title: radar id and volume time.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import colors
    from matplotlib import pyplot as plt
    from matplotlib.patches import Patch

    figure, axes = plt.subplots(1, 3, figsize=(16, 5.4), dpi=80, constrained_layout=True)
    extent = (-MAX_RANGE_KM, MAX_RANGE_KM, -MAX_RANGE_KM, MAX_RANGE_KM)
    for axis, dataset, label in ((axes[0], raw, "raw"), (axes[1], qc, "QC'd")):
        dbz = np.asarray(dataset["DBZH"].values, dtype=np.float32)
        dbz = np.where(dbz <= -32.5, np.nan, dbz)  # NEXRAD's below-threshold / folded codes
        image = cartesian(dbz, dataset["azimuth"].values, dataset["range"].values)
        mesh = axis.imshow(image, extent=extent, origin="upper", cmap="turbo",
                           vmin=DBZ_LIMITS[0], vmax=DBZ_LIMITS[1], interpolation="nearest")
        axis.set_title(f"{label} DBZH, elevation {float(dataset['sweep_fixed_angle']):.1f}°")
        axis.set_xlabel("east (km)")
        axis.set_ylabel("north (km)")
        axis.set_aspect("equal")
    figure.colorbar(mesh, ax=axes[:2], label="reflectivity (dBZ)", shrink=0.85)
    classes = np.asarray(qc[QC_CLASS].values).astype(np.float32)
    classes[~np.isin(classes, list(CLASS_COLOURS))] = np.nan  # no echo stays blank
    image = cartesian(classes, qc["azimuth"].values, qc["range"].values)
    palette = colors.ListedColormap([CLASS_COLOURS[c][1] for c in sorted(CLASS_COLOURS)])
    axes[2].imshow(image, extent=extent, origin="upper", cmap=palette, vmin=-0.5,
                   vmax=len(CLASS_COLOURS) - 0.5, interpolation="nearest")
    axes[2].set_title(f"classes, elevation {float(qc['sweep_fixed_angle']):.1f}°")
    axes[2].set_xlabel("east (km)")
    axes[2].set_aspect("equal")
    axes[2].legend(handles=[Patch(color=colour, label=name)
                            for name, colour in CLASS_COLOURS.values()],
                   loc="lower left", fontsize=8, framealpha=0.8)
    figure.suptitle(title)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return buffer.getvalue()


def mask_comparison_png(lowest: dict, tree, title: str) -> bytes:
    """PNG bytes: a sweep's reflectivity and what the UNet, wradlib's fuzzy classification and
    the RHOHV rule remove (``reference.volume_agreement``'s lowest sweep, on the model grid):
    removed echo red, kept echo grey."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import colors
    from matplotlib import pyplot as plt

    from transforms.radar.reading import azimuth_grid

    azimuths, ranges_m = azimuth_grid(), lowest["range_km"] * 1000.0
    extent = (-MAX_RANGE_KM, MAX_RANGE_KM, -MAX_RANGE_KM, MAX_RANGE_KM)
    echo = ~np.isnan(lowest["dbzh"])
    figure, axes = plt.subplots(1, 4, figsize=(20, 5.2), dpi=72, constrained_layout=True)
    image = cartesian(lowest["dbzh"], azimuths, ranges_m)
    mesh = axes[0].imshow(image, extent=extent, cmap="turbo", vmin=DBZ_LIMITS[0],
                          vmax=DBZ_LIMITS[1], interpolation="nearest")
    figure.colorbar(mesh, ax=axes[0], label="reflectivity (dBZ)", shrink=0.8)
    axes[0].set_title("DBZH as the model sees it")
    palette = colors.ListedColormap(["#b0b0b0", "#d62728"])
    for axis, name, label in ((axes[1], "unet", "UNet"), (axes[2], "fuzzy", "wradlib fuzzy"),
                              (axes[3], "rhohv", "RHOHV rule")):
        field = np.where(echo, lowest[name].astype(np.float32), np.nan)
        axis.imshow(cartesian(field, azimuths, ranges_m), extent=extent, cmap=palette,
                    vmin=0, vmax=1, interpolation="nearest")
        axis.set_title(f"{label}: removed {lowest[name][echo].mean():.0%} of echo (red)")
    for axis in axes:
        axis.set_xlabel("east (km)")
        axis.set_aspect("equal")
    axes[0].set_ylabel("north (km)")
    figure.suptitle(title)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return buffer.getvalue()


def write_bytes(path: str, data: bytes) -> str:
    """Write a whole file to a local path or any Beam filesystem."""
    if "://" not in path:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        temp = os.path.join(os.path.dirname(path), f".tmp-{os.path.basename(path)}")
        try:
            with open(temp, "wb") as handle:
                handle.write(data)
            os.replace(temp, path)
        finally:
            if os.path.exists(temp):
                os.remove(temp)  # a write that failed leaves nothing behind
        return path
    with FileSystems.create(path) as sink:
        sink.write(data)
    return path
