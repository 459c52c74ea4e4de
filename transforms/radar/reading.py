"""Reading NEXRAD Level II volumes (archive files and real-time chunk sets) into sweep arrays.

xradar decodes; this module turns each sweep into a fixed layout the QC model can take:
float32 ``(azimuth, range, channel)`` with ``N_AZIMUTH`` rays on a regular azimuth grid and
``N_RANGE`` gates, channels ``CHANNELS``.

Notes:
    Azimuth: rays are put on a regular grid of ``N_AZIMUTH`` cells centred on
    ``(i + 0.5) * 360 / N_AZIMUTH`` degrees by nearest neighbour (a 360-ray sweep has each ray
    used twice on the 0.5 degree grid; a 717-ray sweep fills its gaps from the nearest ray).
    Range: gates beyond ``N_RANGE`` are cut; shorter sweeps are padded with NaN (no echo).
    1,840 gates of 250 m reach 462 km, just past the 1,832 of a super-resolution sweep and a
    multiple of 16, as a UNet of depth 4 needs.

    Which model classifies a sweep: the dual-polarization model where the sweep has every
    dual-pol moment; else, where a dual-pol sweep at the same fixed angle exists (the Doppler
    pass of a NEXRAD split cut), none: it takes that sweep's classes; else the
    single-polarization model where one is configured and the sweep has reflectivity (legacy
    and single-pol volumes). A volume with no sweep either model can take is rejected
    (``MissingMomentsError``), in words that name its format, sweeps and moments.

    Legacy NEXRAD (message 1): xradar 0.12 puts the velocity of a sweep that also holds
    reflectivity on reflectivity's 1 km range coordinate although it was measured on 250 m
    gates (Py-ART's reader places it at a quarter of those ranges), and stores the Doppler
    pass's first gate, -375 m, as an unsigned 65,161 m. The first is why the single-pol model
    sees reflectivity alone in legacy volumes; the second is corrected here.

    Chunks: a real-time volume arrives as ``YYYYMMDD-HHMMSS-NNN-T`` objects (T = S start,
    I intermediate, E end). Only the concatenation in sequence order decodes; out-of-order
    input decodes to silently corrupted data, so ordering and completeness are checked here
    before xradar sees them.
"""

import bz2
import dataclasses
import datetime
import gzip
import os
import pathlib
import re
import shutil
import tempfile
import threading

import numpy as np
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from models.radar_qc.vocabulary import CHANNELS, OPTIONAL_CHANNELS, SINGLE_POL_CHANNELS
from transforms.radar import formats, level2_records

N_AZIMUTH = 720
N_RANGE = 1840
GRID_GATE_M = 250.0  # the model's gate spacing (NEXRAD super-resolution)
# Sweeps whose fixed angles differ by less than this are the same cut (split cuts).
SAME_ANGLE_DEG = 0.25
# Which model classifies a sweep (``Sweep.role``), and the channels each takes.
DUAL_POL, SINGLE_POL = "dual_pol", "single_pol"
ROLE_CHANNELS = {DUAL_POL: CHANNELS, SINGLE_POL: SINGLE_POL_CHANNELS}
# One decode or write of a radar file at a time per process: the NetCDF/HDF5 C libraries under
# xradar and xarray are not thread-safe, and runners run several bundles of a worker in threads
# (Prism, Flink's SDK harness). With sweeps written while volumes were read, 2 of 20 Prism runs
# died before this lock, one of SIGSEGV (cause not proven; none in 9 runs since).
RADAR_FILE_LOCK = threading.RLock()
_CHUNK_RE = re.compile(r"^(\d{8})-(\d{6})-(\d{3})-([SIE])$")


class RadarReadError(Exception):
    """A file that is not a decodable NEXRAD Level II volume."""


class MissingMomentsError(RadarReadError):
    """A volume without any sweep a configured model can classify (moments missing)."""


class NotPpiError(RadarReadError):
    """A volume with an RHI (or other non-PPI) sweep: QC works on PPI sweeps."""


class IncompleteChunksError(RadarReadError):
    """A chunk set that is not a whole volume; ``missing`` lists the absent sequence numbers."""

    def __init__(self, message: str, missing: list[int]):
        super().__init__(message)
        self.missing = missing


@dataclasses.dataclass(frozen=True)
class Chunk:
    """One real-time chunk, parsed from its object name."""

    path: str
    volume_start: datetime.datetime
    sequence: int
    kind: str  # "S", "I" or "E"


@dataclasses.dataclass
class Sweep:
    """One sweep in the model's layout.

    Attributes:
        radar: radar id, e.g. "KLBB".
        volume_time: volume start (UTC).
        sweep_number: index of the sweep in the volume.
        elevation: fixed elevation angle, degrees.
        azimuths: the azimuth grid, degrees (N_AZIMUTH,).
        ranges: gate centres, metres (N_RANGE,); NaN beyond the sweep's last gate.
        data: float32 (N_AZIMUTH, N_RANGE, channels of its role); NaN where no echo.
        source_shape: (rays, gates) as decoded, before regridding.
        role: the model that classifies it, ``DUAL_POL`` or ``SINGLE_POL``.
    """

    radar: str
    volume_time: datetime.datetime
    sweep_number: int
    elevation: float
    azimuths: np.ndarray
    ranges: np.ndarray
    data: np.ndarray
    source_shape: tuple[int, int]
    role: str = DUAL_POL


def sweep_names(tree) -> list[str]:
    """The volume's ``sweep_<n>`` groups in sweep order (``sweep_10`` after ``sweep_9``)."""
    return sorted((n for n in tree.children if n.startswith("sweep_")),
                  key=lambda n: int(n.split("_")[-1]))


def volume_source(path: str) -> tuple[str, ...]:
    """A volume named by one path: an archive file, or a folder holding the real-time chunks
    of one volume (in name order).

    Raises:
        RadarReadError: nothing there, or a folder without files.
    """
    if os.path.isdir(path):
        chunks = tuple(sorted(os.path.join(path, name) for name in os.listdir(path)
                              if not name.startswith(".")
                              and os.path.isfile(os.path.join(path, name))))
        if not chunks:
            raise RadarReadError(f"{path}: a folder without chunks")
        return chunks
    if not os.path.exists(path):
        raise RadarReadError(f"{path}: no such file or folder")
    return (path,)


def volume_paths(folder: str) -> list[str]:
    """Every volume under ``folder`` and its subfolders: archive files, and folders of one
    volume's real-time chunks (a folder whose files are all chunk-named)."""
    found = []
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        names = [f for f in sorted(files)
                 if not f.startswith(".") and not f.lower().startswith("readme")]
        if names and all(_chunk_named(f) for f in names):
            found.append(root)
        else:
            found += [os.path.join(root, f) for f in names]
    return found


def _chunk_named(name: str) -> bool:
    try:
        parse_chunk_name(name)
    except RadarReadError:
        return False
    return True


def parse_chunk_name(path: str) -> Chunk:
    """``.../20260328-201457-001-S`` -> Chunk.

    Raises:
        RadarReadError: the name does not follow the real-time chunk convention.
    """
    match = _CHUNK_RE.match(os.path.basename(path))
    if not match:
        raise RadarReadError(f"{path} is not named YYYYMMDD-HHMMSS-NNN-[SIE]")
    date, time_of_day, sequence, kind = match.groups()
    start = datetime.datetime.strptime(date + time_of_day, "%Y%m%d%H%M%S").replace(
        tzinfo=datetime.UTC)
    return Chunk(path, start, int(sequence), kind)


def order_chunks(chunks: list[Chunk]) -> list[Chunk]:
    """The chunks of one volume in sequence order, duplicates dropped, completeness checked.

    Complete means: sequence 1 is the S chunk, exactly one E chunk, and every number between.

    Raises:
        IncompleteChunksError: with the missing sequence numbers (the E chunk's absence is
            reported as "end chunk not received").
    """
    by_sequence = {}
    for chunk in chunks:
        by_sequence.setdefault(chunk.sequence, chunk)
    ends = [c.sequence for c in by_sequence.values() if c.kind == "E"]
    last = ends[0] if ends else max(by_sequence, default=0)
    missing = [n for n in range(1, last + 1) if n not in by_sequence]
    problems = [f"missing chunks {missing}"] if missing else []
    if not ends:
        problems.append("end chunk not received")
    if 1 in by_sequence and by_sequence[1].kind != "S":
        problems.append("chunk 1 is not a start chunk")
    if problems:
        raise IncompleteChunksError("incomplete volume: " + "; ".join(problems), missing)
    return [by_sequence[n] for n in range(1, last + 1)]


def _local_copies(source: str | list[str], directory: str) -> str | list[str]:
    """Remote paths (gs://, s3://, ...) copied into ``directory``, in order; local ones as
    they are. xradar and netCDF read local files only."""
    def one(path: str) -> str:
        if "://" not in path:
            return path
        target = os.path.join(directory, path.rstrip("/").rsplit("/", 1)[-1])
        try:
            with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f, \
                    open(target, "wb") as sink:
                shutil.copyfileobj(f, sink)
        except OSError as error:
            raise RadarReadError(f"{path}: cannot read: {error}") from error
        return target

    return one(source) if isinstance(source, str) else [one(p) for p in source]


def _compression(path: str) -> str | None:
    """The compression of a whole file, "gz" or "bz2" (None when plain): from its first
    bytes, whatever its name says; a name ending .gz / .bz2 counts too, so a file whose name
    lies is reported as such."""
    try:
        with open(path, "rb") as f:
            head = f.read(3)
    except OSError:
        return None
    if head[:2] == b"\x1f\x8b" or (path.endswith(".gz") and not head.startswith(b"BZh")):
        return "gz"
    if head == b"BZh" or path.endswith(".bz2"):
        return "bz2"
    return None


def _decompressed_copy(path: str, directory: str) -> str:
    opener = gzip.open if _compression(path) == "gz" else bz2.open
    base = os.path.basename(path)
    target = os.path.join(directory, (base.rsplit(".", 1)[0] if base.endswith(
        (".gz", ".bz2")) else base) + ".decompressed")
    with opener(path, "rb") as source, open(target, "wb") as sink:
        sink.write(source.read())
    return target


# Leading bytes of the formats a radar landing area receives, in words.
_SIGNATURES = (
    (b"AR2V", "NEXRAD Level II archive (message 31)"),
    (b"ARCHIVE2", "NEXRAD Level II archive (legacy, message 1)"),
    (b"\x1f\x8b", "gzip-compressed file"),
    (b"BZh", "bzip2-compressed file"),
    (b"\x89HDF\r\n\x1a\n", "HDF5 file (ODIM_H5, GAMIC or NetCDF-4)"),
    (b"CDF\x01", "NetCDF classic file"),
    (b"CDF\x02", "NetCDF 64-bit offset file"),
)


def describe_file(path: str, fmt: str | None = None) -> str:
    """What a file looks like from its first bytes and size, in words ("NEXRAD Level II
    archive (message 31), 212,016 bytes"); used in decode errors. ``fmt``: the detected
    radar format, when the signature table does not know it."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(64)
    except OSError:
        return "unreadable file"
    if not head:
        return "empty file (0 bytes)"
    kind = next((name for magic, name in _SIGNATURES if head.startswith(magic)), None)
    if kind is None and fmt is not None:
        kind = f"{fmt} file"
    if kind is None:
        printable = sum(32 <= b < 127 or b in (9, 10, 13) for b in head) / len(head)
        kind = "text file" if printable > 0.95 else "binary file of no known radar format"
    return f"{kind}, {size:,} bytes"


def decode_failure(error: Exception) -> str:
    """A decoder's exception as a reason a radar person can act on."""
    text = f"{type(error).__name__}: {error}"
    if isinstance(error, EOFError) or "unpack requires a buffer" in str(error):
        return f"the file ends inside a record (truncated or cut short?) ({text})"
    if isinstance(error, OSError) and "data stream" in str(error):
        return f"a compressed record inside the volume is corrupt (bzip2: {error})"
    if isinstance(error, (KeyError, IndexError, ValueError, TypeError)):
        return f"a record does not have the layout Level II requires ({text})"
    return text


def decompress_failure(error: Exception) -> str:
    """Why a .gz / .bz2 file did not decompress, in words."""
    if isinstance(error, EOFError):
        return "the compressed stream ends early (file cut short?)"
    return f"not the compressed data its name says ({error})"


def open_volume(source: str | list[str], only_cuts: frozenset[int] | None = None):
    """Decode a volume with xradar: an archive file (plain, .gz or .bz2) of any format
    ``transforms.radar.formats`` detects from its content, or an ordered list of NEXRAD
    real-time chunks. The tree's root attribute ``source_format`` names the format.

    ``only_cuts``: NEXRAD only: decode these elevation cuts alone (a volume still arriving,
    read sweep by sweep); other formats ignore it.

    Raises:
        RadarReadError: the file is no format read here, or its reader cannot decode it
            (truncated, corrupt), said in words.
    """
    with tempfile.TemporaryDirectory() as tmp:
        target = _local_copies(source, tmp)
        name = source if isinstance(source, str) else source[0]
        packed = ""
        if isinstance(target, str) and _compression(target):
            packed = f"{describe_file(target)}, holding a "
            try:
                target = _decompressed_copy(target, tmp)
            except (OSError, EOFError) as error:
                raise RadarReadError(f"{source}: {describe_file(target)}: cannot decompress: "
                                     f"{decompress_failure(error)}") from error
        fmt = formats.detect_format(target if isinstance(target, str) else target[0])
        what = packed + (describe_file(target, fmt) if isinstance(target, str)
                         else f"{len(target)} real-time chunks")
        damage = formats.container_damage(target) if fmt is None and isinstance(
            target, str) else None
        if damage:
            raise RadarReadError(f"{name}: {what}: {damage}; it cannot be read (fetch it "
                                 f"again)")
        if fmt is None or (not isinstance(target, str) and fmt != formats.NEXRAD):
            raise RadarReadError(f"{name}: {what}: not a radar format read here (those are "
                                 f"{', '.join(formats.READERS)}, detected from content)")
        repaired = None
        if fmt == formats.NEXRAD:
            target, repaired = _record_by_record(target, tmp, name, what, only_cuts)
        with RADAR_FILE_LOCK:
            tree = _decode(target, fmt, name, what)
        if repaired is not None and repaired.notes:
            tree.attrs["damaged_cuts"] = "; ".join(repaired.notes)
        if repaired is not None and repaired.cuts_expected:
            tree.attrs["number_elevation_cuts"] = repaired.cuts_expected
        if fmt == formats.NEXRAD:
            tree.attrs["nexrad_legacy"] = int(formats.nexrad_legacy(
                target if isinstance(target, str) else target[0]))
    sweeps = [n for n in tree.children if n.startswith("sweep_")]
    if not sweeps:
        damage = tree.attrs.get("damaged_cuts")
        raise RadarReadError(f"{name}: {what}: decoded as {fmt}, but holds no complete sweep "
                             + (f"({damage})" if damage else
                                "(every sweep was cut short, or the file has none)"))
    tree.attrs["source_format"] = fmt
    tree.attrs["instrument_name"], tree.attrs["radar_id_from"] = radar_identity(tree, name)
    if fmt == formats.NEXRAD and tree.attrs.get("nexrad_legacy"):
        _unwrap_legacy_ranges(tree)
    return tree


def _record_by_record(target: str | list[str], directory: str, name: str, what: str,
                      only_cuts: frozenset[int] | None = None
                      ) -> tuple[str | list[str], "level2_records.Repaired | None"]:
    """A Level II archive or ordered chunk set checked record by record
    (``level2_records.repair``): the file xradar decodes, and what was repaired (None where
    the original is decoded as it is).

    Raises:
        RadarReadError: the volume's metadata record is corrupt.
    """
    paths = [target] if isinstance(target, str) else target
    raw = b"".join(pathlib.Path(p).read_bytes() for p in paths)
    try:
        repaired = level2_records.repair(raw, only_cuts)
    except level2_records.CorruptVolumeError as error:
        raise RadarReadError(f"{name}: {what}: not a decodable NEXRAD Level II volume: "
                             f"{error}") from error
    if repaired is None:
        return target, None
    stream = os.path.join(directory, os.path.basename(paths[0]) + ".level2")
    pathlib.Path(stream).write_bytes(repaired.data)
    return stream, repaired


def _unwrap_legacy_ranges(tree) -> None:
    """Message-1 Doppler passes start before the radar (-375 m, a signed 16-bit number that
    xradar reads unsigned as 65,161 m): give their gates their real ranges."""
    for name in sweep_names(tree):
        ds = tree[name].to_dataset(inherit=False)
        ranges = ds["range"].values
        if len(ranges) and ranges[0] >= 32768:
            tree[name].dataset = ds.assign_coords(
                range=ds["range"].copy(data=ranges - 65536.0))


def _decode(target, fmt: str, name: str, what: str):
    """The format's xradar reader, everything read now (a decompressed copy is temporary)."""
    import xradar

    if fmt == formats.CFRADIAL2:
        return _open_cfradial2(target, name)
    try:
        tree = getattr(xradar.io, formats.READERS[fmt])(target)
        tree.load()
    except Exception as error:  # noqa: BLE001 - every reader raises many kinds on bad input
        raise RadarReadError(f"{name}: {what}: not a decodable {fmt} volume: "
                             f"{decode_failure(error)}") from error
    if fmt != formats.NEXRAD:
        _standard_layout(tree)
    if fmt == formats.ODIM and tree.attrs.get("instrument_name") in (None, "None", ""):
        tree.attrs["instrument_name"] = formats.odim_station(target) or "unknown"
    if fmt == formats.RAINBOW and (sensor := formats.rainbow_sensor(target)):
        tree.attrs["instrument_name"] = sensor
    return tree


def _standard_layout(tree) -> None:
    """Sweeps as xradar's NEXRAD reader gives them (the layout the model and the writer
    take): only ``sweep_<n>`` groups, rays along azimuth, moments under the model's names."""
    sweeps = [n for n in tree.children if n.startswith("sweep_")]
    for other in set(tree.children) - set(sweeps):
        del tree[other]  # radar_parameters, georeferencing_correction, ...
    for sweep in sweeps:
        ds = formats.standard_moments(tree[sweep].to_dataset(inherit=False))
        if "time" in ds.dims and "azimuth" in ds.coords:
            ds = ds.swap_dims({"time": "azimuth"})
        tree[sweep].dataset = ds


def _open_cfradial2(path: str, name: str | None = None):
    """A CF/Radial 2 NetCDF volume (this pipeline's own output, synthetic volumes) read with
    xarray, in the decoded layout."""
    import xarray as xr

    try:
        tree = xr.open_datatree(path)
        tree.load()
        tree.close()
    except Exception as error:  # noqa: BLE001 - netCDF/HDF5 raise many kinds on bad input
        raise RadarReadError(f"{name or path}: not a readable CF/Radial 2 NetCDF volume "
                             f"({type(error).__name__}: {error})") from error
    if not any(n.startswith("sweep_") for n in tree.children):
        raise RadarReadError(f"{name or path}: NetCDF, but holds no sweep_<n> groups")
    _standard_layout(tree)
    return tree


def azimuth_grid(n_azimuth: int = N_AZIMUTH) -> np.ndarray:
    return (np.arange(n_azimuth) + 0.5) * 360.0 / n_azimuth


def regrid_indices(azimuths: np.ndarray, n_azimuth: int = N_AZIMUTH) -> np.ndarray:
    """For each grid cell, the index of the decoded ray nearest in azimuth (circular)."""
    grid = azimuth_grid(n_azimuth)
    difference = np.abs(grid[:, None] - np.asarray(azimuths, dtype=float)[None, :]) % 360.0
    return np.argmin(np.minimum(difference, 360.0 - difference), axis=1)


def no_measurement(variable) -> np.ndarray:
    """True where a decoded moment holds NEXRAD code 0 (below threshold) or 1 (range folded).

    xradar 0.12 decodes those codes as numbers (DBZH -33 and -32.5 dBZ, for example) instead
    of masking them; they are recovered from the packing (scale_factor, add_offset).
    """
    values = np.asarray(variable.values, dtype=np.float64)
    scale = variable.encoding.get("scale_factor")
    offset = variable.encoding.get("add_offset")
    if scale is None or offset is None:
        return np.isnan(values)
    return np.isnan(values) | (np.rint((values - offset) / scale) <= 1)


def range_indices(native_ranges: np.ndarray, n_range: int = N_RANGE
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(grid gate centres, index of the nearest native gate for each; -1 beyond the sweep).

    The grid has ``GRID_GATE_M`` gates from the sweep's first gate; native gates of any
    spacing (NEXRAD's 250 m gives the identity) are sampled nearest.
    """
    native = np.asarray(native_ranges, dtype=np.float64)
    grid = native[0] + GRID_GATE_M * np.arange(n_range)
    after = np.clip(np.searchsorted(native, grid), 1, len(native) - 1)
    nearest = np.where(np.abs(native[after] - grid) < np.abs(grid - native[after - 1]),
                       after, after - 1) if len(native) > 1 else np.zeros(n_range, dtype=int)
    half = (native[-1] - native[-2]) / 2 if len(native) > 1 else GRID_GATE_M / 2
    nearest[grid > native[-1] + half] = -1
    return grid, nearest


def grid_gates(native_ranges: np.ndarray, n_range: int = N_RANGE,
               first_gate_m: float | None = None) -> np.ndarray:
    """For each native gate, its grid gate (-1 outside the grid): how classes go back. The
    grid starts at ``first_gate_m`` (default: the first native gate)."""
    native = np.asarray(native_ranges, dtype=np.float64)
    origin = native[0] if first_gate_m is None else first_gate_m
    gates = np.rint((native - origin) / GRID_GATE_M).astype(int)
    gates[(gates >= n_range) | (gates < 0)] = -1
    return gates


def sweep_array(dataset, channels=CHANNELS, n_azimuth: int = N_AZIMUTH,
                n_range: int = N_RANGE, leave_out=()):
    """One decoded sweep -> (float32 (n_azimuth, n_range, len(channels)), ranges (n_range,)),
    rays and gates of any spacing sampled nearest onto the model's grid.

    Gates without a measurement (below threshold, range folded) are NaN; so is every gate of
    an optional channel (velocity, spectrum width) the sweep lacks or ``leave_out`` names.

    Raises:
        MissingMomentsError: a channel other than the optional ones is absent.
    """
    missing = [c for c in channels if c not in dataset.data_vars and c not in OPTIONAL_CHANNELS]
    if missing:
        raise MissingMomentsError(f"sweep lacks {', '.join(missing)}")
    rows = regrid_indices(dataset["azimuth"].values, n_azimuth)
    grid, gates = range_indices(dataset["range"].values, n_range)
    inside = gates >= 0
    data = np.full((n_azimuth, n_range, len(channels)), np.nan, dtype=np.float32)
    for channel, name in enumerate(channels):
        if name not in dataset.data_vars or name in leave_out:
            continue
        values = np.asarray(dataset[name].values, dtype=np.float32)
        values[no_measurement(dataset[name])] = np.nan
        data[:, inside, channel] = values[rows][:, gates[inside]]
    ranges = np.full(n_range, np.nan, dtype=np.float32)
    ranges[inside] = grid[inside]
    return data, ranges


# Where a volume's radar id came from (the index row's ``radar_id_from``).
ID_FROM_FILE, ID_FROM_NAME, ID_UNKNOWN = "file metadata", "file name", "none"
# A radar id at the start of a file name: an ICAO (KTLX), an ODIM node (sekkr, dehnr) or a
# short site code before the volume's date (KABR20050101_000745.gz, dehnr_20240101.h5).
_NAME_ID = re.compile(r"^([A-Za-z]{3,5}\d{0,2}?)[_-]?(?:19|20)\d{6}")


def radar_identity(tree, path: str) -> tuple[str, str]:
    """(radar id, where it came from): the file's own metadata (NEXRAD ICAO, ODIM
    ``what/source``, CF/Radial ``instrument_name`` attribute or variable, Rainbow sensor id,
    IRIS / UF site name, as the readers put it in ``instrument_name`` or ``site_name``), else
    the file name, else "unknown". An id of fewer than three characters is no id."""
    root = tree["/"].ds
    candidates = [tree.attrs.get("instrument_name"), tree.attrs.get("site_name")]
    for variable in ("instrument_name", "site_name"):
        if variable in root.variables:
            value = root[variable].values
            candidates.append(b"".join(value.ravel()) if value.dtype.kind == "S" and value.ndim
                              else value.item() if value.ndim == 0 else "".join(
                                  str(v) for v in value.ravel()))
    for candidate in candidates:
        name = radar_name(candidate)
        if len(name) >= 3 and name.lower() not in ("unknown", "none", "nan"):
            return name, ID_FROM_FILE
    found = _NAME_ID.match(os.path.basename(path))
    if found:
        return found.group(1).upper(), ID_FROM_NAME
    return "unknown", ID_UNKNOWN


def radar_name(raw) -> str:
    """The radar's id as file and folder names can carry it: letters, digits, '-' and '_'
    only ("unknown" when nothing is left: a blanked header holds NUL bytes)."""
    text = raw.decode("latin-1") if isinstance(raw, bytes) else str(raw or "")
    cleaned = re.sub(r"[^A-Za-z0-9_-]", "", text)
    return cleaned if cleaned and cleaned != "None" else "unknown"


def volume_sweeps(tree, single_pol: bool = False) -> tuple[list[Sweep], list[int]]:
    """Every sweep of a decoded volume a model classifies, in the model's layout (each with
    its ``role``), plus the numbers of the sweeps no model classifies (the Doppler passes of
    split cuts, which take their partner's classes; or sweeps neither model can take).

    Args:
        single_pol: a single-polarization model is configured (sweeps without dual-pol
            moments but with reflectivity go to it).

    Raises:
        MissingMomentsError: no sweep can be classified; the message names the format, the
            sweeps and the moments found.
        NotPpiError: a sweep is an RHI scan.
    """
    root = tree["/"].ds
    fmt = str(tree.attrs.get("source_format") or "radar")
    radar = radar_name(root.attrs.get("instrument_name"))
    start = root["time_coverage_start"].values.item() if "time_coverage_start" in root else None
    start = start.decode() if isinstance(start, bytes) else start  # CF/Radial 1: char arrays
    volume_time = (datetime.datetime.fromisoformat(start.replace("Z", "+00:00"))
                   if start else None)
    names = sweep_names(tree)
    datasets = [tree[name].ds for name in names]
    for number, dataset in enumerate(datasets):
        mode = str(dataset["sweep_mode"].values) if "sweep_mode" in dataset else ""
        if "rhi" in mode.lower():
            raise NotPpiError(f"{fmt} volume: sweep {number} is an RHI scan (sweep_mode "
                              f"{mode!r}); QC runs on PPI sweeps, where the model was trained")
    dual = [n for n, ds in enumerate(datasets) if all(c in ds.data_vars for c in CHANNELS)]
    dual_angles = [float(datasets[n]["sweep_fixed_angle"].values) for n in dual]
    # Legacy velocity sits on the wrong ranges in xradar's decoding (module notes).
    leave_out = OPTIONAL_CHANNELS if tree.attrs.get("nexrad_legacy") else ()
    sweeps, skipped = [], []
    for number, dataset in enumerate(datasets):
        angle = float(dataset["sweep_fixed_angle"].values)
        if number in dual:
            role = DUAL_POL
        elif (single_pol and "DBZH" in dataset.data_vars
              and not any(abs(a - angle) < SAME_ANGLE_DEG for a in dual_angles)):
            role = SINGLE_POL
        else:
            skipped.append(number)
            continue
        data, ranges = sweep_array(dataset, ROLE_CHANNELS[role], leave_out=leave_out)
        sweeps.append(Sweep(
            radar=radar, volume_time=volume_time, sweep_number=number, elevation=angle,
            azimuths=azimuth_grid(), ranges=ranges, data=data,
            source_shape=(dataset.sizes["azimuth"], dataset.sizes["range"]), role=role))
    if not sweeps:
        raise MissingMomentsError(missing_moments(tree, names, fmt, single_pol))
    return sweeps, skipped


def missing_moments(tree, names: list[str], fmt: str, single_pol: bool = False) -> str:
    """Why no sweep can be QC'd, as a radar person reads it: the format, the sweeps, the
    moments found and what is missing."""
    found = sorted({v for n in names for v, var in tree[n].ds.data_vars.items()
                    if var.dims[-1:] == ("range",)})
    lacking = [c for c in CHANNELS if not any(c in tree[n].ds.data_vars for n in names)]
    reason = ("no reflectivity (DBZH or a name it is known by)"
              if CHANNELS[0] in lacking or single_pol
              else f"no {'/'.join(lacking)}, and no single-polarization model configured")
    return (f"{fmt} volume, {len(names)} sweep{'s' if len(names) != 1 else ''}, moments "
            f"{', '.join(found) or 'none'}: {reason}")
