"""Radar files as the field has them: damaged containers named as damaged, RHI scans refused as
RHI in every container, moment names as configuration, the radar id from the file itself, and
every shared volume ending in one index row or one dead letter."""

import json
import os
import shutil

import netCDF4
import pyarrow.dataset as pads
import pytest
import xarray as xr

from models.config import CONFIG_DIR_ENV
from tests.conftest import DATA_DIR
from transforms.radar import formats
from transforms.radar.cfradial1 import write_cfradial1
from transforms.radar.reading import (
    DUAL_POL,
    ID_FROM_FILE,
    ID_FROM_NAME,
    NotPpiError,
    RadarReadError,
    open_volume,
    volume_sweeps,
)
from transforms.radar.volumes import write_cfradial2

RADAR = DATA_DIR / "radar"


@pytest.fixture(scope="module")
def lowest_cut(klbb_path):
    """KLBB's lowest split cut (surveillance and Doppler pass) as a volume."""
    tree = open_volume(klbb_path)
    return xr.DataTree.from_dict({
        "/": tree.to_dataset(inherit=False),
        **{f"/sweep_{i}": tree[f"sweep_{i}"].to_dataset(inherit=False) for i in (0, 1)}})


def _renamed(tree, renames: dict, **attrs):
    nodes = {"/": tree.to_dataset(inherit=False).assign_attrs(**attrs)}
    for name in tree.children:
        ds = tree[name].to_dataset(inherit=False)
        nodes[f"/{name}"] = ds.rename({k: v for k, v in renames.items() if k in ds})
    return xr.DataTree.from_dict(nodes)


@pytest.mark.parametrize("writer", ["odim", "cfradial2", "cfradial1"])
def test_a_container_cut_short_is_called_truncated_with_its_size(lowest_cut, tmp_path, writer):
    import xradar

    path = tmp_path / "volume"
    {"odim": lambda: xradar.io.to_odim(lowest_cut, str(path), source="NOD:uslbb"),
     "cfradial2": lambda: write_cfradial2(lowest_cut, str(path)),
     "cfradial1": lambda: write_cfradial1(lowest_cut, str(path))}[writer]()
    whole = path.read_bytes()
    cut = tmp_path / "cut"
    cut.write_bytes(whole[:len(whole) // 2])
    with pytest.raises(RadarReadError) as refused:
        open_volume(str(cut))
    assert (f"truncated: {len(whole) // 2:,} of its {len(whole):,} bytes (an HDF5 file cut "
            f"short); it cannot be read") in str(refused.value)
    assert "not a radar format" not in str(refused.value)


def test_an_rhi_is_refused_as_an_rhi_in_every_container(tmp_path):
    pyart = pytest.importorskip("pyart")
    rhi = pyart.io.read_cfradial(pyart.testing.CFRADIAL_RHI_FILE)
    files = []
    for container in ("NETCDF4", "NETCDF3_CLASSIC"):
        files.append(tmp_path / f"rhi_{container}.nc")
        pyart.io.write_cfradial(str(files[-1]), rhi, format=container)
    # A CF/Radial 1.4 file that says only "CF-1.7" in Conventions is still CF/Radial.
    files.append(tmp_path / "rhi_cf17.nc")
    shutil.copy(files[0], files[-1])
    with netCDF4.Dataset(files[-1], "a") as nc:
        nc.Conventions = "CF-1.7"
    for path in files:
        assert formats.detect_format(str(path)) == formats.CFRADIAL1, path
        with pytest.raises(NotPpiError, match="CF/Radial 1 volume: sweep 0 is an RHI scan"):
            volume_sweeps(open_volume(str(path)))


# Names other readers and writers give the moments (Py-ART's default field names, CF/Radial
# corrected_ / uncorrected_ names, NEXRAD data blocks), and the model's name for each.
ALIASES = [
    ("reflectivity", "DBZH"), ("corrected_reflectivity", "DBZH"), ("total_power", "DBZH"),
    ("uncorrected_reflectivity", "DBZH"), ("REF", "DBZH"), ("TH", "DBZH"),
    ("differential_reflectivity", "ZDR"), ("corrected_differential_reflectivity", "ZDR"),
    ("uncorrected_differential_reflectivity", "ZDR"),
    ("cross_correlation_ratio", "RHOHV"), ("uncorrected_cross_correlation_ratio", "RHOHV"),
    ("RHO", "RHOHV"),
    ("differential_phase", "PHIDP"), ("corrected_differential_phase", "PHIDP"),
    ("unfolded_differential_phase", "PHIDP"), ("uncorrected_differential_phase", "PHIDP"),
    ("UPHIDP", "PHIDP"), ("PHI", "PHIDP"),
    ("velocity", "VRADH"), ("corrected_velocity", "VRADH"), ("VEL", "VRADH"),
    ("spectrum_width", "WRADH"), ("SW", "WRADH"),
]


@pytest.mark.parametrize("name, standard", ALIASES, ids=[a for a, _ in ALIASES])
def test_every_moment_alias_reads_as_the_model_name(name, standard):
    sweep = xr.Dataset({name: (("azimuth", "range"), [[1.0]])})
    assert list(formats.standard_moments(sweep).data_vars) == [standard]


def test_the_first_name_a_sweep_holds_wins_and_the_table_is_configuration(tmp_path,
                                                                          monkeypatch):
    both = xr.Dataset({n: (("azimuth", "range"), [[v]]) for n, v in (
        ("corrected_differential_phase", 1.0), ("uncorrected_differential_phase", 2.0))})
    assert formats.standard_moments(both)["PHIDP"].item() == 1.0
    (tmp_path / "moments").mkdir()
    (tmp_path / "moments" / "radar.json").write_text(json.dumps(
        {"version": "mine", "moments": {"PHIDP": ["uncorrected_differential_phase"]}}))
    monkeypatch.setenv(CONFIG_DIR_ENV, str(tmp_path))
    formats.moment_aliases.cache_clear()
    try:
        assert formats.standard_moments(both)["PHIDP"].item() == 2.0
    finally:
        monkeypatch.delenv(CONFIG_DIR_ENV)
        formats.moment_aliases.cache_clear()


def test_dual_pol_moments_under_uncorrected_names_go_to_the_dual_pol_model(lowest_cut,
                                                                          tmp_path):
    path = tmp_path / "uncorrected.nc"
    write_cfradial1(_renamed(lowest_cut, {"RHOHV": "uncorrected_cross_correlation_ratio",
                                          "PHIDP": "uncorrected_differential_phase",
                                          "DBZH": "reflectivity"}), str(path))
    sweeps, _ = volume_sweeps(open_volume(str(path)), single_pol=True)
    # (CF/Radial 1 holds every moment for every ray, so the Doppler pass has them too.)
    assert sweeps and {s.role for s in sweeps} == {DUAL_POL}


@pytest.mark.parametrize("instrument, file_name, radar, source", [
    ("KLBB", "volume.nc", "KLBB", ID_FROM_FILE),
    ("", "KTLX20190715_120037.nc", "KTLX", ID_FROM_NAME),
    ("L", "dehnr_20240101T1200.nc", "DEHNR", ID_FROM_NAME),
    ("", "volume.nc", "unknown", "none"),
])
def test_the_radar_id_comes_from_the_file_then_its_name(lowest_cut, tmp_path, instrument,
                                                        file_name, radar, source):
    path = tmp_path / file_name
    write_cfradial1(_renamed(lowest_cut, {}, instrument_name=instrument), str(path))
    tree = open_volume(str(path))
    assert (tree.attrs["instrument_name"], tree.attrs["radar_id_from"]) == (radar, source)
    assert volume_sweeps(tree)[0][0].radar == radar


def test_odim_nexrad_and_rainbow_ids_are_read_from_their_metadata(tmp_path, lowest_cut):
    import xradar

    odim = tmp_path / "x.h5"
    xradar.io.to_odim(lowest_cut, str(odim), source="WMO:10410,NOD:deess")
    assert open_volume(str(odim)).attrs["instrument_name"] == "DEESS"
    rainbow = tmp_path / "x.vol"
    rainbow.write_bytes(b'<volume version="5.34.16"><scan name="x"><radarinfo alt="185" '
                        b'id="ESS" lat="51.4" lon="6.97"><name>Essen</name></radarinfo>')
    assert formats.rainbow_sensor(str(rainbow)) == "ESS"


def _shared_volumes() -> list[str]:
    return sorted(str(p) for p in [*RADAR.glob("KLBB*"), *(RADAR / "network").glob("*")])


@pytest.mark.slow
def test_every_shared_volume_ends_in_one_index_row_or_dead_letter(radar_registry, tmp_path):
    from pipelines import radar_qc

    volumes = _shared_volumes()
    if not volumes:
        pytest.skip(f"real data not found at {RADAR}")
    inputs = tmp_path / "in"
    inputs.mkdir()
    for path in volumes:
        os.symlink(path, inputs / os.path.basename(path))
    out = tmp_path / "out"
    radar_qc.run(["--input", str(inputs / "*"), "--output", str(out), "--registry",
                  radar_registry, "--sample_rate", "0.0"])
    rows = pads.dataset(str(out / "qc_volumes"), partitioning="hive").to_table().to_pylist()
    dead = (pads.dataset(str(out / "dead_letters"), partitioning="hive").to_table().to_pylist()
            if (out / "dead_letters").exists() else [])
    assert not dead, [d["message"] for d in dead]
    by_file = {os.path.basename(r["source"]): r for r in rows}
    assert sorted(by_file) == sorted(os.path.basename(v) for v in volumes)
    assert all(r["radar"] == name[:4] and r["radar_id_from"] == ID_FROM_FILE
               for name, r in by_file.items())
    # The legacy volumes by the single-pol model, every dual-pol volume by the dual-pol one.
    for name in ("KABR20050101_000745.gz", "KTLX20100501_000444_V03.gz"):
        assert by_file[name]["model_name"] == "radar_qc_single", name
        assert by_file[name]["sweeps_single_pol"] == by_file[name]["sweeps_classified"]
    ktlx = by_file["KTLX20190715_120037_V06"]
    assert (ktlx["sweeps_total"], ktlx["sweeps_expected"], ktlx["complete"],
            ktlx["damaged_cuts"]) == (7, 7, True, None)
    trimmed = by_file["KLWX20180302_115347_3cuts"]
    assert trimmed["complete"] is False and trimmed["damaged_cuts"].startswith(
        "cuts 4-11 of the coverage pattern are not in the file (it ends after cut 3)")
