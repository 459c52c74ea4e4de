"""Which radar format a file is, from its content (never its name), and xradar's reader for it.

Detection reads the first bytes and, for HDF5 and NetCDF, the root attributes and groups:
ODIM_H5 says ``Conventions = ODIM_H5/...``; GAMIC HDF5 has ``scan0`` groups; CF/Radial 2
has ``sweep_<n>`` groups, CF/Radial 1 ``sweep_start_ray_index`` variables; IRIS/Sigmet raw
files start with a product header (structure id 27); Rainbow with ``<volume``; Universal
Format records carry ``UF`` in their first bytes.
"""

import functools
import re

from models.config import ConfigError, default_path, read_config
from models.radar_qc.vocabulary import CHANNELS, OPTIONAL_CHANNELS

NEXRAD = "NEXRAD Level II"
ODIM = "ODIM_H5"
GAMIC = "GAMIC HDF5"
CFRADIAL1 = "CF/Radial 1"
CFRADIAL2 = "CF/Radial 2"
IRIS = "IRIS/Sigmet"
RAINBOW = "Rainbow"
UF = "Universal Format"

# xradar's reader of each format (names in xradar.io).
READERS = {
    NEXRAD: "open_nexradlevel2_datatree",
    ODIM: "open_odim_datatree",
    GAMIC: "open_gamic_datatree",
    CFRADIAL1: "open_cfradial1_datatree",
    CFRADIAL2: "open_cfradial2_datatree",
    IRIS: "open_iris_datatree",
    RAINBOW: "open_rainbow_datatree",
    UF: "open_uf_datatree",
}
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
NETCDF3_MAGIC = (b"CDF\x01", b"CDF\x02")


def detect_format(path: str) -> str | None:
    """The radar format of a local file, or None when it is none xradar reads here."""
    try:
        with open(path, "rb") as f:
            head = f.read(64)
    except OSError:
        return None
    if head.startswith((b"AR2V", b"ARCHIVE2")):
        return NEXRAD
    if head.startswith(HDF5_MAGIC):
        return _hdf5_format(path)
    if head.startswith(NETCDF3_MAGIC):
        return _netcdf3_format(path)
    if head.lstrip().startswith(b"<volume"):
        return RAINBOW
    if head[:2] == b"\x1b\x00" and len(head) >= 12:
        return IRIS
    if b"UF" in (head[0:2], head[4:6], head[8:10]):
        return UF
    return None


# Archive header versions of NEXRAD volumes recorded with legacy digital radar data (message 1:
# reflectivity at 1 km and velocity at 250 m gates, no dual-polarization, before 2008-2013).
NEXRAD_LEGACY_HEADERS = (b"ARCHIVE2", b"AR2V0001")


def nexrad_legacy(path: str) -> bool:
    """True when a NEXRAD Level II file's header says legacy message-1 data."""
    try:
        with open(path, "rb") as f:
            return f.read(8).startswith(NEXRAD_LEGACY_HEADERS)
    except OSError:
        return False


def _text(value) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _hdf5_format(path: str) -> str | None:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            conventions = _text(f.attrs.get("Conventions", ""))
            if conventions.upper().startswith("ODIM_H5"):
                return ODIM
            if "scan0" in f:
                return GAMIC
            if "cf/radial" in conventions.lower() or "sweep_0" in f \
                    or "sweep_start_ray_index" in f:
                return CFRADIAL2 if "sweep_0" in f else CFRADIAL1
    except OSError:
        return None
    return None


_TRUNCATED_HDF5 = re.compile(r"truncated file: eof = (\d+),.*stored_eof = (\d+)")


def container_damage(path: str) -> str | None:
    """Why a file in a container radar formats use (HDF5, NetCDF classic) cannot be opened,
    in words ("truncated: 40,394 of its 80,788 bytes"); None when it opens (or is no such
    container). A known container that does not open is damaged, not a foreign format."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError:
        return None
    if head.startswith(HDF5_MAGIC):
        import h5py

        try:
            h5py.File(path, "r").close()
        except OSError as error:
            found = _TRUNCATED_HDF5.search(str(error))
            if found:
                return (f"truncated: {int(found.group(1)):,} of its {int(found.group(2)):,} "
                        f"bytes (an HDF5 file cut short)")
            return f"a damaged HDF5 file ({error})"
        return None
    if head.startswith(NETCDF3_MAGIC):
        import netCDF4

        try:
            netCDF4.Dataset(path).close()
        except OSError as error:
            return f"a damaged NetCDF file ({error})"
    return None


def _netcdf3_format(path: str) -> str | None:
    import netCDF4

    try:
        with netCDF4.Dataset(path) as ds:
            if "sweep_start_ray_index" in ds.variables:
                return CFRADIAL1
    except OSError:
        return None
    return None


@functools.cache
def moment_aliases() -> dict[str, tuple[str, ...]]:
    """The moment names other writers use, by the model's name for each: configuration
    (``<config>/moments/radar.json``), read once per process.

    Raises:
        ConfigError: the file is missing, or names a moment the models do not take.
    """
    config = read_config("moments", default_path("moments", "radar"))
    table = config.content.get("moments")
    known = set(CHANNELS) | set(OPTIONAL_CHANNELS)
    if not isinstance(table, dict) or set(table) - known or not all(
            isinstance(names, list) and all(isinstance(n, str) for n in names)
            for names in table.values()):
        raise ConfigError(f"{config.path}: \"moments\" maps each of {', '.join(sorted(known))} "
                          f"to a list of names")
    return {standard: tuple(names) for standard, names in table.items()}


def standard_moments(dataset):
    """A sweep with its moments under the model's names (``moment_aliases``); other
    variables as they were."""
    renames = {}
    for standard, names in moment_aliases().items():
        if standard in dataset.data_vars:
            continue
        found = next((n for n in names if n in dataset.data_vars), None)
        if found is not None:
            renames[found] = standard
    return dataset.rename(renames) if renames else dataset


_RAINBOW_SENSOR = re.compile(rb"<(?:sensorinfo|radarinfo)\b[^>]*?\bid=\"([^\"]+)\"")


def rainbow_sensor(path: str) -> str | None:
    """The radar's id from a Rainbow file's XML header (``<sensorinfo id=...>`` or
    ``<radarinfo id=...>``), which xradar's reader does not carry over."""
    try:
        with open(path, "rb") as f:
            head = f.read(65536)
    except OSError:
        return None
    found = _RAINBOW_SENSOR.search(head)
    return found.group(1).decode("latin-1") if found else None


def odim_station(path: str) -> str | None:
    """The radar's name from an ODIM_H5 file's ``what/source`` (its NOD, else RAD, WMO or PLC
    identifier), which xradar's reader does not carry over."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            source = _text(f["what"].attrs.get("source", ""))
    except (OSError, KeyError):
        return None
    parts = dict(p.split(":", 1) for p in source.split(",") if ":" in p)
    name = next((parts[k] for k in ("NOD", "RAD", "WMO", "PLC") if parts.get(k)), None)
    return name.upper() if name else None
