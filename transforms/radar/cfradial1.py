"""A QC'd volume as CF/Radial 1.4 NetCDF: what Py-ART's ``read_cfradial``, LROSE and most
research radar software read.

xradar's CF/Radial 1 writer is not used: it fails on volumes whose sweeps differ in
``sweep_number`` (every volume; xarray MergeError in its ``combine_by_coords``) and pads every
moment to float64. Here the rays of every sweep are concatenated along ``time`` on one
``range`` coordinate, a sweep at a time (memory: one sweep's field, not the volume's), moments
packed as int16 with a per-moment scale and offset over their finite values, classes as int16
with their CF flags, zlib-compressed NetCDF-4.

Notes:
    CF/Radial 1 has one range coordinate per volume. Sweeps with fewer gates are padded with
    the fill value; sweeps whose gates lie at other ranges (legacy NEXRAD: reflectivity at
    1 km, velocity at 250 m) cannot be written in it, and are refused with that reason.
"""

import numpy as np

from transforms.radar.reading import sweep_names

# Moments are stored as int16: 65,533 steps across each moment's finite range.
PACKED_FILL = np.int16(-32768)
PACKED_STEPS = 65533.0
# Variables of a sweep that are per-sweep metadata, not moments.
_SWEEP_VARIABLES = ("sweep_mode", "sweep_number", "sweep_fixed_angle", "prt_mode",
                    "follow_mode")


class CfRadial1Error(ValueError):
    """A volume CF/Radial 1 cannot hold as it is."""


def sweep_datasets(tree) -> list:
    return [tree[n].to_dataset(inherit=False) for n in sweep_names(tree)]


def shared_range(sweeps) -> np.ndarray:
    """The volume's one range coordinate: the longest sweep's, every other sweep's gates
    being its first ones.

    Raises:
        CfRadial1Error: a sweep's gates lie elsewhere (other spacing or first gate).
    """
    longest = max((np.asarray(ds["range"].values, dtype=np.float64) for ds in sweeps), key=len)
    for number, ds in enumerate(sweeps):
        own = np.asarray(ds["range"].values, dtype=np.float64)
        if not np.allclose(own, longest[:len(own)], atol=0.5):
            raise CfRadial1Error(
                f"CF/Radial 1 holds one range coordinate per volume; sweep {number}'s gates "
                f"({own[0]:.0f} m every {np.diff(own[:2]).item() if len(own) > 1 else 0:.0f} "
                f"m) lie elsewhere than the volume's ({longest[0]:.0f} m every "
                f"{np.diff(longest[:2]).item() if len(longest) > 1 else 0:.0f} m): write "
                f"CF/Radial 2 or ODIM_H5")
    return longest


def packing(values: np.ndarray) -> tuple[float, float]:
    """(scale_factor, add_offset) that store ``values``' finite range as int16."""
    finite = values[np.isfinite(values)]
    if not finite.size:
        return 1.0, 0.0
    low, high = float(finite.min()), float(finite.max())
    scale = (high - low) / PACKED_STEPS or 1.0
    return scale, (high + low) / 2.0


def _moments(sweeps) -> dict:
    """Every (azimuth, range) variable of any sweep, with one of its DataArrays (for attrs)."""
    found = {}
    for ds in sweeps:
        for name, var in ds.data_vars.items():
            if var.dims == ("azimuth", "range") and name not in found:
                found[name] = var
    return found


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def write_cfradial1(tree, path: str) -> str:
    """Write ``tree`` (a decoded or QC'd volume) as CF/Radial 1.4 to the local ``path``.

    Raises:
        CfRadial1Error: the volume's sweeps do not share their range gates.
    """
    import netCDF4

    sweeps = sweep_datasets(tree)
    ranges = shared_range(sweeps)
    rays = [ds.sizes["azimuth"] for ds in sweeps]
    starts = np.concatenate([[0], np.cumsum(rays)[:-1]]).astype(np.int32)
    times = np.concatenate([ds["time"].values.astype("datetime64[ns]") for ds in sweeps])
    first = times[~np.isnat(times)].min()
    root = tree.to_dataset(inherit=False)
    moments = _moments(sweeps)
    with netCDF4.Dataset(path, "w", format="NETCDF4") as nc:
        attrs = {k: (int(v) if isinstance(v, bool | np.bool_) else v)
                 for k, v in tree.attrs.items() if v is not None and not isinstance(v, dict)}
        attrs.update(Conventions="CF/Radial instrument_parameters", version="1.4",
                     title=str(attrs.get("title") or "QC'd radar volume"))
        nc.setncatts({k: (v if isinstance(v, int | float | np.number) else str(v))
                      for k, v in attrs.items()})
        nc.createDimension("time", int(sum(rays)))
        nc.createDimension("range", len(ranges))
        nc.createDimension("sweep", len(sweeps))
        nc.createDimension("string_length", 32)

        def variable(name, dtype, dims, data=None, **attributes):
            var = nc.createVariable(name, dtype, dims, zlib=bool(dims), complevel=1,
                                    fill_value=attributes.pop("_FillValue", None))
            var.setncatts(attributes)
            if data is not None:
                var[:] = data
            return var

        start_text = np.datetime_as_string(first, unit="s") + "Z"
        variable("time", "f8", ("time",), (times - first) / np.timedelta64(1, "s"),
                 standard_name="time", units=f"seconds since {start_text}", calendar="standard")
        variable("range", "f4", ("range",), ranges, standard_name="projection_range_coordinate",
                 units="meters", spacing_is_constant="true",
                 meters_to_center_of_first_gate=float(ranges[0]),
                 meters_between_gates=float(ranges[1] - ranges[0]) if len(ranges) > 1 else 0.0)
        variable("azimuth", "f4", ("time",),
                 np.concatenate([ds["azimuth"].values for ds in sweeps]), units="degrees",
                 standard_name="ray_azimuth_angle")
        variable("elevation", "f4", ("time",),
                 np.concatenate([ds["elevation"].values for ds in sweeps]), units="degrees",
                 standard_name="ray_elevation_angle")
        for name in ("latitude", "longitude", "altitude"):
            value = root[name].values if name in root.variables else sweeps[0][name].values
            variable(name, "f8", (), float(value),
                     units="meters" if name == "altitude" else f"degrees_{name[:3]}")
        variable("sweep_number", "i4", ("sweep",),
                 [int(ds["sweep_number"].values) if "sweep_number" in ds else n
                  for n, ds in enumerate(sweeps)])
        variable("fixed_angle", "f4", ("sweep",),
                 [float(ds["sweep_fixed_angle"].values) for ds in sweeps], units="degrees")
        variable("sweep_start_ray_index", "i4", ("sweep",), starts)
        variable("sweep_end_ray_index", "i4", ("sweep",), starts + np.array(rays) - 1)
        modes = variable("sweep_mode", "S1", ("sweep", "string_length"))
        modes[:] = netCDF4.stringtochar(np.array(
            [_text(ds["sweep_mode"].values) if "sweep_mode" in ds else "azimuth_surveillance"
             for ds in sweeps], dtype="S32"))
        variable("time_coverage_start", "S1", ("string_length",))[:] = netCDF4.stringtochar(
            np.array([start_text], dtype="S32"))[0]

        for name, sample in moments.items():
            _write_moment(nc, name, sample, sweeps, starts, len(ranges))
    return path


def _write_moment(nc, name: str, sample, sweeps, starts, n_range: int) -> None:
    """One moment of every sweep, packed, a sweep at a time (fill where a sweep lacks it)."""
    attrs = {k: v for k, v in sample.attrs.items()
             if k not in ("_FillValue", "scale_factor", "add_offset", "coordinates")
             and v is not None}
    attrs = {k: (int(v) if isinstance(v, bool | np.bool_) else v) for k, v in attrs.items()}
    if sample.dtype.kind in "iub":  # classes: whole numbers with their flags, no packing
        var = nc.createVariable(name, "i2", ("time", "range"), zlib=True, complevel=1)
        var.setncatts(attrs)
        for ds, start in zip(sweeps, starts):
            if name in ds:
                values = np.asarray(ds[name].values, dtype=np.int16)
                var[start:start + values.shape[0], :values.shape[1]] = values
        return
    low = min((float(np.nanmin(ds[name].values)) for ds in sweeps
               if name in ds and np.isfinite(ds[name].values).any()), default=0.0)
    high = max((float(np.nanmax(ds[name].values)) for ds in sweeps
                if name in ds and np.isfinite(ds[name].values).any()), default=0.0)
    scale, offset = packing(np.array([low, high]))
    var = nc.createVariable(name, "i2", ("time", "range"), zlib=True, complevel=1,
                            fill_value=PACKED_FILL)
    var.setncatts({**attrs, "scale_factor": np.float32(scale), "add_offset": np.float32(offset)})
    for ds, start in zip(sweeps, starts):
        if name not in ds:
            continue
        values = np.asarray(ds[name].values, dtype=np.float64)
        block = np.zeros((values.shape[0], n_range))
        missing = np.ones(block.shape, dtype=bool)
        block[:, :values.shape[1]] = np.nan_to_num(values)
        missing[:, :values.shape[1]] = ~np.isfinite(values)
        var[start:start + values.shape[0], :] = np.ma.masked_array(block, mask=missing)
