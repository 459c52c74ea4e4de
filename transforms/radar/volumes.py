"""From decoded volumes to QC'd volumes: sweep keys, masks on native gates, CF/Radial output.

The model sees sweeps on the fixed grid of ``transforms.radar.reading`` (N_AZIMUTH x
N_RANGE); its classes are mapped back to each sweep's own rays and gates here, so the written
volume keeps the decoded geometry and every moment of every sweep.

Notes:
    Split cuts: the Doppler pass of a low elevation has no dual-pol moments and is not
    classified itself; it takes the classes of the classified sweep at the same fixed angle
    (within ``SAME_ANGLE_DEG``), matched by azimuth and range. A sweep with no such partner is
    written unmasked, its ``QC_CLASS`` all no-echo with ``qc_applied = 0``.

    Two models: dual-pol sweeps go to the dual-polarization model, sweeps with reflectivity
    only (legacy and single-pol volumes) to the single-polarization model when one is
    configured (``reading.volume_sweeps``); each sweep's ``QC_CLASS`` names the model and
    version that classified it.
"""

import dataclasses
import datetime
import os
import tempfile

import numpy as np
from apache_beam.io.filesystems import FileSystems

from models.radar_qc.vocabulary import BIO, CLASS_NAMES, CLUTTER, MET, NO_ECHO, removed
from transforms.radar.reading import (
    DUAL_POL,
    N_AZIMUTH,
    N_RANGE,
    RADAR_FILE_LOCK,
    ROLE_CHANNELS,
    SAME_ANGLE_DEG,
    grid_gates,
    sweep_names,
    volume_sweeps,
)

QC_CLASS = "QC_CLASS"
_UMASK = os.umask(0o022)
os.umask(_UMASK)
# Formats a QC'd volume can be written in (``--output_formats``).
CFRADIAL2_OUT, CFRADIAL1_OUT, ODIM_OUT = "cfradial2", "cfradial1", "odim"
OUTPUT_FORMATS = (CFRADIAL2_OUT, CFRADIAL1_OUT, ODIM_OUT)


@dataclasses.dataclass(frozen=True)
class SweepKey:
    """What travels beside a sweep's moments through RunInference (the keyed handler's key).

    Attributes:
        volume_id: ``<radar>-<volume start as YYYYMMDDTHHMMSSZ>``.
        radar: radar id.
        volume_time: volume start (UTC).
        sweep_number: index of the sweep in the decoded volume.
        elevation: fixed angle, degrees.
        source: the archive file, or the ordered chunk paths of a real-time volume.
        qc_sweeps: how many sweeps of this volume go through the model.
        skipped_sweeps: sweep numbers without dual-pol moments (not classified themselves).
        decoded_at: when the volume was decoded (for latency).
        first_gate_m: range of the first gate's centre, metres.
        gate_spacing_m: distance between gates, metres.
        role: the model that classifies the sweep (``reading.DUAL_POL`` / ``SINGLE_POL``).
    """

    volume_id: str
    radar: str
    volume_time: datetime.datetime
    sweep_number: int
    elevation: float
    source: tuple[str, ...]
    qc_sweeps: int
    skipped_sweeps: tuple[int, ...]
    decoded_at: datetime.datetime
    first_gate_m: float | None = None
    gate_spacing_m: float | None = None
    role: str = DUAL_POL

    @property
    def prediction_id(self) -> str:
        return f"{self.volume_id}-s{self.sweep_number:02d}"

    @property
    def origin(self) -> str:
        return ";".join(self.source)


def volume_id(radar: str, volume_time: datetime.datetime) -> str:
    return f"{radar}-{volume_time.astimezone(datetime.UTC):%Y%m%dT%H%M%SZ}"


def keyed_sweeps(tree, source: tuple[str, ...], single_pol: bool = False
                 ) -> list[tuple[SweepKey, np.ndarray]]:
    """Every sweep of a decoded volume a model classifies, as (key, float32 moments on the
    model grid); ``single_pol``: a single-polarization model is configured.

    Raises:
        MissingMomentsError: no sweep can be classified.
    """
    sweeps, skipped = volume_sweeps(tree, single_pol)
    decoded_at = datetime.datetime.now(datetime.UTC)
    first = sweeps[0]
    vid = volume_id(first.radar, first.volume_time)
    return [(SweepKey(vid, s.radar, s.volume_time, s.sweep_number, s.elevation, source,
                      len(sweeps), tuple(skipped), decoded_at, float(s.ranges[0]),
                      float(s.ranges[1] - s.ranges[0]), s.role), s.data) for s in sweeps]


@dataclasses.dataclass(frozen=True)
class DecodedVolume:
    """A volume decoded once, travelling beside its stacked sweeps through each model's
    RunInference to the writer (the keyed handler's key): nothing is read twice.

    Attributes:
        tree: the decoded volume (xarray DataTree), every sweep and moment as read.
        keys: the key of every classified sweep, in volume order.
        stacks: each role's sweeps still to classify, ``(sweeps, azimuth, range, C)``.
        classes: each classified role's (grid classes of its sweeps, model id).
    """

    tree: object
    keys: list[SweepKey]
    stacks: dict = dataclasses.field(default_factory=dict)
    classes: dict = dataclasses.field(default_factory=dict)

    @property
    def first(self) -> SweepKey:
        return self.keys[0]

    def role_keys(self, role: str) -> list[SweepKey]:
        """The keys of ``role``'s sweeps, in stack order."""
        return [key for key in self.keys if key.role == role]

    def classified(self, role: str, classes: np.ndarray, model_id: str) -> "DecodedVolume":
        """This volume with ``role``'s classes recorded (its stack stays: the prediction
        rows summarise what the model saw)."""
        return dataclasses.replace(self, classes={**self.classes, role: (classes, model_id)})

    def classes_by_sweep(self) -> dict[int, np.ndarray]:
        return {key.sweep_number: classes[i] for role, (classes, _) in self.classes.items()
                for i, key in enumerate(self.role_keys(role))}

    def model_by_sweep(self) -> dict[int, str]:
        """The model id (version path) that classified each sweep."""
        return {key.sweep_number: model_id for role, (_, model_id) in self.classes.items()
                for key in self.role_keys(role)}


def expected_sweeps(tree) -> int | None:
    """How many sweeps the volume's coverage pattern has (NEXRAD message 5's elevation cuts,
    as xradar reports it); None when the format does not say or the radar shortened the
    pattern on purpose (SAILS / MRLE ``vcp_truncated``)."""
    cuts = tree.attrs.get("number_elevation_cuts")
    if not isinstance(cuts, (int, np.integer)) or cuts <= 0 or tree.attrs.get("vcp_truncated"):
        return None
    return int(cuts)


def sweep_count(tree) -> int:
    return len(sweep_names(tree))


def decode_volume(tree, source: tuple[str, ...], single_pol: bool = False) -> DecodedVolume:
    """A decoded volume -> its DecodedVolume, with each role's sweeps stacked as float32
    ``(sweeps, N_AZIMUTH, N_RANGE, channels)`` in ``stacks`` (both roles always present,
    possibly with no sweeps).

    Raises:
        MissingMomentsError: no sweep can be classified.
    """
    keyed = keyed_sweeps(tree, source, single_pol)
    stacks = {}
    for role, channels in ROLE_CHANNELS.items():
        moments = [m for key, m in keyed if key.role == role]
        stacks[role] = (np.stack(moments) if moments else
                        np.empty((0, N_AZIMUTH, N_RANGE, len(channels)), dtype=np.float32))
    return DecodedVolume(tree, [key for key, _ in keyed], stacks)


def native_classes(grid_classes: np.ndarray, azimuths: np.ndarray, ranges: np.ndarray,
                   grid_first_gate_m: float | None = None) -> np.ndarray:
    """Classes on a sweep's own rays and gates (any spacing) from the model grid (nearest
    grid cell), the grid starting at ``grid_first_gate_m`` (default: the sweep's own first
    gate). Gates outside the grid are NO_ECHO (not classified, so not removed).
    """
    cells = np.floor(np.asarray(azimuths, dtype=float) % 360.0 / (360.0 / N_AZIMUTH))
    rows = grid_classes[cells.astype(int) % N_AZIMUTH]
    gates = grid_gates(ranges, first_gate_m=grid_first_gate_m)
    out = np.full((len(azimuths), len(gates)), NO_ECHO, dtype=np.uint8)
    inside = gates >= 0
    out[:, inside] = rows[:, gates[inside]]
    return out


def apply_qc(tree, classes_by_sweep: dict[int, np.ndarray], model_attrs: dict,
             in_place: bool = False, model_by_sweep: dict[int, str] | None = None):
    """The volume with every (azimuth, range) moment set to NaN where a gate is not weather.

    Each sweep also gets a ``QC_CLASS`` variable (flag values per CF; attributes
    ``qc_applied``, ``qc_source_sweep`` and ``qc_model``); the root gets the model's name,
    version, sha256.

    Args:
        tree: the decoded volume (xarray DataTree).
        classes_by_sweep: grid classes (N_AZIMUTH, N_RANGE) by sweep number.
        model_attrs: attributes naming the model (written on the root).
        in_place: mask ``tree`` itself instead of a deep copy (the pipeline's writer owns
            its decoded volume: a copy would double a worker's memory per volume).
        model_by_sweep: "<name> <version>" of the model that classified each sweep.
    """
    if not in_place:
        tree = tree.copy(deep=True)
    model_by_sweep = model_by_sweep or {}
    names = sweep_names(tree)
    angles = {n: float(tree[names[n]].ds["sweep_fixed_angle"].values) for n in classes_by_sweep}
    first_gates = {n: float(tree[names[n]].ds["range"].values[0]) for n in classes_by_sweep}
    for number, name in enumerate(names):
        ds = tree[name].to_dataset(inherit=False)
        source = number if number in classes_by_sweep else _partner(
            float(ds["sweep_fixed_angle"].values), angles)
        shape = (ds.sizes["azimuth"], ds.sizes["range"])
        if source is None:
            classes = np.full(shape, NO_ECHO, dtype=np.uint8)
        else:
            classes = native_classes(classes_by_sweep[source], ds["azimuth"].values,
                                     ds["range"].values, first_gates[source])
            drop = removed(classes)
            for var in list(ds.data_vars):
                if ds[var].dims == ("azimuth", "range") and ds[var].dtype.kind == "f":
                    ds[var] = ds[var].where(~drop)
        # On the variable, not the sweep: xradar's CF/Radial 2 writer drops sweep attributes.
        ds[QC_CLASS] = (("azimuth", "range"), classes, {
            "long_name": "radar QC class of the gate",
            "flag_values": np.array([MET, BIO, CLUTTER, NO_ECHO], dtype=np.uint8),
            "flag_meanings": " ".join([*CLASS_NAMES, "no_echo"]),
            "qc_applied": int(source is not None),
            "qc_source_sweep": -1 if source is None else int(source),
            "qc_model": "" if source is None else model_by_sweep.get(source, "")})
        tree[name].dataset = ds
    tree.attrs.update(model_attrs)
    return tree


def _partner(angle: float, angles: dict[int, float]) -> int | None:
    """The classified sweep at the same fixed angle, if any."""
    best = min(angles, key=lambda n: abs(angles[n] - angle), default=None)
    if best is None or abs(angles[best] - angle) > SAME_ANGLE_DEG:
        return None
    return best


def _netcdf_attrs(attrs: dict) -> dict:
    """NetCDF cannot store booleans or None as attributes: booleans become 0/1, None goes."""
    return {k: (int(v) if isinstance(v, bool | np.bool_) else v)
            for k, v in attrs.items() if v is not None}


def write_cfradial2(tree, path: str) -> str:
    """Write the volume as CF/Radial 2 NetCDF (xradar's writer; one group per sweep) to
    ``path`` (local or any Beam filesystem), complete or not at all: written to a temp file,
    then renamed (local) or copied.

    Moments are stored as zlib-compressed float32 (~9 MB for a KLBB volume; CF/Radial 1's
    padded float64 layout is ~500 MB and takes 40 s to write).
    """
    import xradar

    tree = tree.copy()
    for node in tree.subtree:
        node.attrs = _netcdf_attrs(dict(node.attrs))
        for var in node.variables.values():
            var.attrs = _netcdf_attrs(dict(var.attrs))
            if var.dtype.kind == "M":  # decoded times: xarray writes their units itself
                var.attrs = {k: v for k, v in var.attrs.items()
                             if k not in ("units", "calendar")}
            if var.dims == ("azimuth", "range") and var.dtype.kind == "f":
                var.encoding = {"dtype": "float32", "zlib": True, "complevel": 1,
                                "_FillValue": np.float32(np.nan)}
            elif var.dims == ("azimuth", "range"):
                var.encoding = {"zlib": True, "complevel": 1}
    return _write_whole(path, ".nc", lambda temp: xradar.io.to_cfradial2(tree, temp))


def write_cfradial1(tree, path: str) -> str:
    """Write the volume as CF/Radial 1.4 (``transforms.radar.cfradial1``: int16-packed
    moments, one range coordinate) to ``path``, complete or not at all.

    Raises:
        CfRadial1Error: the sweeps do not share their range gates (nothing is left written).
    """
    from transforms.radar.cfradial1 import write_cfradial1 as write

    return _write_whole(path, ".nc", lambda temp: write(tree, temp))


def write_odim(tree, path: str, radar: str) -> str:
    """Write the volume as ODIM_H5 (xradar's writer; every moment and ``QC_CLASS`` as a
    quantity of each dataset) to ``path``, complete or not at all; ``what/source`` names the
    radar (``NOD:<radar>``)."""
    import xradar

    for name in sweep_names(tree):
        if tree[name].ds.sizes.get("azimuth", 0) < 2:
            raise ValueError(f"ODIM_H5 output needs 2 rays or more per sweep (xradar's writer "
                             f"derives ray times from their differences); {name} has "
                             f"{tree[name].ds.sizes.get('azimuth', 0)}: write CF/Radial 2")
    tree = tree.copy()
    for node in tree.subtree:  # xradar's ODIM writer reads ray times as nanoseconds
        ds = node.to_dataset(inherit=False)
        times = {name: ds[name].astype("datetime64[ns]") for name in ds.variables
                 if ds[name].dtype.kind == "M" and ds[name].dtype != np.dtype("datetime64[ns]")}
        if times:
            node.dataset = ds.assign_coords(**{k: v for k, v in times.items() if k in ds.coords}
                                            ).assign(**{k: v for k, v in times.items()
                                                        if k not in ds.coords})
    return _write_whole(path, ".h5", lambda temp: xradar.io.to_odim(
        tree, temp, source=f"NOD:{radar.lower()}"))


def _write_whole(path: str, suffix: str, write) -> str:
    """``write(local temporary path)``, then rename (local) or copy (any Beam filesystem)
    to ``path``: readers never see a file half written."""
    local = "://" not in path
    directory = os.path.dirname(path) if local else None
    if local:
        os.makedirs(directory, exist_ok=True)
    with tempfile.NamedTemporaryFile(suffix=suffix, dir=directory, prefix=".tmp-",
                                     delete=False) as handle:
        temp = handle.name
    try:
        with RADAR_FILE_LOCK:
            write(temp)
        if local:  # the temporary file is private (0600); the output is as any file here
            os.chmod(temp, 0o666 & ~_UMASK)
            os.replace(temp, path)
        else:
            with open(temp, "rb") as source, FileSystems.create(path) as sink:
                sink.write(source.read())
    finally:
        if os.path.exists(temp):
            os.remove(temp)
    return path
