"""Radar formats other than NEXRAD Level II: detected from content, read with xradar's reader,
QC'd end to end; what cannot be QC'd is refused in words naming the format, the sweeps and
the moments. Test files are written from the real KLBB volume by xradar's own writers."""

import os

import numpy as np
import pyarrow.dataset as pads
import pytest
import xarray as xr

from pipelines import radar_qc
from transforms.radar import formats
from transforms.radar.reading import (
    MissingMomentsError,
    NotPpiError,
    RadarReadError,
    open_volume,
    volume_sweeps,
)
from transforms.radar.volumes import write_cfradial2


@pytest.fixture(scope="module")
def klbb_two_sweeps(klbb_path):
    """The lowest split cut of KLBB (its surveillance and Doppler passes) as a volume."""
    tree = open_volume(klbb_path)
    return xr.DataTree.from_dict({
        "/": tree.to_dataset(inherit=False),
        **{f"/sweep_{i}": tree[f"sweep_{i}"].to_dataset(inherit=False) for i in (0, 1)}})


def _with_moments(tree, keep):
    """The volume with only the ``keep`` moments in each sweep."""
    nodes = {"/": tree.to_dataset(inherit=False)}
    for name in tree.children:
        ds = tree[name].to_dataset(inherit=False)
        drop = [v for v, var in ds.data_vars.items() if var.dims[-1:] == ("range",)
                and v not in keep]
        nodes[f"/{name}"] = ds.drop_vars(drop)
    return xr.DataTree.from_dict(nodes)


def coarse(tree):
    """The volume on another geometry: every second ray (360 rays of 1 degree) and every
    fourth gate (1 km gates), as a radar with coarser sampling records it."""
    nodes = {"/": tree.to_dataset(inherit=False)}
    for name in tree.children:
        nodes[f"/{name}"] = tree[name].to_dataset(inherit=False).isel(
            azimuth=slice(0, None, 2), range=slice(0, None, 4))
    return xr.DataTree.from_dict(nodes)


@pytest.fixture(scope="module")
def format_files(klbb_two_sweeps, tmp_path_factory):
    import xradar

    folder = tmp_path_factory.mktemp("formats")
    files = {"odim": str(folder / "lbb_volume.h5"), "cf2": str(folder / "lbb_volume.nc"),
             "single_pol": str(folder / "single_pol.h5"), "velocity_only": str(folder / "v.h5"),
             "coarse": str(folder / "lbb_1km_360rays.h5")}
    xradar.io.to_odim(coarse(klbb_two_sweeps), files["coarse"], source="NOD:uslbc")
    xradar.io.to_odim(klbb_two_sweeps, files["odim"], source="NOD:uslbb")
    write_cfradial2(klbb_two_sweeps, files["cf2"])
    xradar.io.to_odim(_with_moments(klbb_two_sweeps, {"DBZH", "VRADH", "WRADH"}),
                      files["single_pol"], source="NOD:uslbs")
    xradar.io.to_odim(_with_moments(klbb_two_sweeps, {"VRADH"}), files["velocity_only"],
                      source="NOD:uslbb")
    return files


def test_formats_are_detected_from_content_not_names(format_files, klbb_path, tmp_path):
    assert formats.detect_format(klbb_path) == formats.NEXRAD
    assert formats.detect_format(format_files["odim"]) == formats.ODIM
    assert formats.detect_format(format_files["cf2"]) == formats.CFRADIAL2
    renamed = tmp_path / "volume.nc"  # an ODIM file named like NetCDF is still ODIM
    renamed.write_bytes(open(format_files["odim"], "rb").read())
    assert formats.detect_format(str(renamed)) == formats.ODIM
    (tmp_path / "rainbow.vol").write_bytes(b'<volume version="5.2" datetime="2026-11-01">')
    assert formats.detect_format(str(tmp_path / "rainbow.vol")) == formats.RAINBOW
    (tmp_path / "noise").write_bytes(np.random.default_rng(1).bytes(1000))
    assert formats.detect_format(str(tmp_path / "noise")) is None


def test_an_odim_volume_reads_like_the_nexrad_one(format_files, klbb_two_sweeps):
    tree = open_volume(format_files["odim"])
    assert tree.attrs["source_format"] == formats.ODIM
    sweeps, skipped = volume_sweeps(tree)
    native, _ = volume_sweeps(klbb_two_sweeps)
    assert [s.radar for s in sweeps] == ["USLBB"] and skipped == [1]
    assert sweeps[0].volume_time == native[0].volume_time
    # ODIM packs moments in 8 or 16 bits: the same echo, to its quantisation.
    same = np.isfinite(sweeps[0].data) & np.isfinite(native[0].data)
    assert same.mean() > 0.95 * np.isfinite(native[0].data).mean()
    assert np.nanmax(np.abs(sweeps[0].data[same] - native[0].data[same])) < 0.5


def test_a_coarser_geometry_is_sampled_onto_the_grid(format_files, klbb_two_sweeps):
    [sweep], _ = volume_sweeps(open_volume(format_files["coarse"]))
    [fine], _ = volume_sweeps(klbb_two_sweeps)
    assert sweep.source_shape == (360, 458) and sweep.data.shape == fine.data.shape
    assert sweep.ranges[0] == 2125.0 and sweep.ranges[1] == 2375.0
    # Grid cells that hold one of the coarse gates equal the fine sweep there (ODIM packing
    # aside): every second ray, every fourth gate.
    both = np.isfinite(sweep.data[::2, ::4]) & np.isfinite(fine.data[::2, ::4])
    assert both.sum() > 10_000
    assert np.abs(sweep.data[::2, ::4][both] - fine.data[::2, ::4][both]).max() < 0.5


@pytest.mark.parametrize("name, error, message", [
    ("single_pol", MissingMomentsError,
     "ODIM_H5 volume, 2 sweeps, moments DBZH, VRADH, WRADH: no ZDR/RHOHV/PHIDP, and no "
     "single-polarization model configured"),
    ("velocity_only", MissingMomentsError,
     "ODIM_H5 volume, 2 sweeps, moments VRADH: no reflectivity (DBZH or a name it is known "
     "by)"),
])
def test_volumes_that_cannot_be_qcd_are_refused_in_words(format_files, name, error, message):
    with pytest.raises(error) as refused:
        volume_sweeps(open_volume(format_files[name]))
    assert str(refused.value) == message


def test_an_rhi_scan_is_refused(klbb_two_sweeps):
    # (xradar's writers refuse to write a PPI's coordinates as an RHI, so the decoded tree
    # is changed in memory, as a reader of an RHI file hands it over.)
    nodes = {"/": klbb_two_sweeps.to_dataset(inherit=False).assign_attrs(
        source_format=formats.CFRADIAL1)}
    for name in klbb_two_sweeps.children:
        ds = klbb_two_sweeps[name].to_dataset(inherit=False)
        nodes[f"/{name}"] = ds.assign(sweep_mode=xr.DataArray("rhi"))
    with pytest.raises(NotPpiError, match="CF/Radial 1 volume: sweep 0 is an RHI scan "
                                          "\\(sweep_mode 'rhi'\\); QC runs on PPI sweeps"):
        volume_sweeps(xr.DataTree.from_dict(nodes))


# Small real files other programs wrote (Py-ART's test data), and what each must end in.
PYART_FILES = [
    ("NEXRAD_ARCHIVE_MSG31_FILE", "qc", "NEXRAD Level II"),    # bzip2-compressed, no .bz2
    ("UF_FILE", "qc", "Universal Format"),                     # PHIDP stored as UPHIDP
    ("NEXRAD_ARCHIVE_MSG1_FILE", MissingMomentsError,
     "NEXRAD Level II volume, 7 sweeps, moments DBZH, VRADH: no ZDR/RHOHV/PHIDP, and no "
     "single-polarization model configured"),
    ("CFRADIAL_PPI_FILE", MissingMomentsError,
     "CF/Radial 1 volume, 1 sweep, moments DBZH: no ZDR/RHOHV/PHIDP, and no "
     "single-polarization model configured"),
    ("CFRADIAL_RHI_FILE", NotPpiError, "CF/Radial 1 volume: sweep 0 is an RHI scan"),
    ("SIGMET_PPI_FILE", RadarReadError,
     "IRIS/Sigmet file, 18,432 bytes: not a decodable IRIS/Sigmet volume: the file ends "
     "inside a record"),
    ("NEXRAD_ARCHIVE_MSG31_COMPRESSED_FILE", RadarReadError,
     "decoded as NEXRAD Level II, but holds no complete sweep"),
]


@pytest.mark.parametrize("name, outcome, expected", PYART_FILES)
def test_real_files_of_other_formats_are_qcd_or_refused_in_words(name, outcome, expected):
    testing = pytest.importorskip("pyart.testing")
    path = getattr(testing, name)
    if outcome == "qc":
        tree = open_volume(path)
        sweeps, _ = volume_sweeps(tree)
        assert tree.attrs["source_format"] == expected and sweeps
        assert all(np.isfinite(s.data[..., 0]).any() for s in sweeps)
        return
    with pytest.raises(outcome) as refused:
        volume_sweeps(open_volume(path))
    assert expected in str(refused.value)


def test_a_format_not_read_here_is_named(tmp_path):
    path = tmp_path / "volume.bin"
    path.write_bytes(b"\x00\x01" * 500)
    with pytest.raises(RadarReadError, match="binary file of no known radar format, 1,000 "
                                             "bytes: not a radar format read here \\(those are "
                                             "NEXRAD Level II, ODIM_H5, GAMIC HDF5"):
        open_volume(str(path))


def test_a_legacy_volume_goes_to_the_single_pol_model():
    """Message-1 NEXRAD (before dual-pol): reflectivity sweeps go to the single-pol model,
    the Doppler passes take their classes; xradar's unsigned first gate is put right."""
    testing = pytest.importorskip("pyart.testing")
    tree = open_volume(testing.NEXRAD_ARCHIVE_MSG1_FILE)
    assert tree.attrs["nexrad_legacy"] == 1
    assert tree["sweep_1"].ds["range"].values[0] == -375.0  # Py-ART's reader says the same
    sweeps, skipped = volume_sweeps(tree, single_pol=True)
    assert [(s.sweep_number, s.role) for s in sweeps] == [
        (0, "single_pol"), (2, "single_pol"), (4, "single_pol"), (5, "single_pol"),
        (6, "single_pol")]
    assert skipped == [1, 3]  # velocity only, at the angles of sweeps 0 and 2
    # Velocity of legacy sweeps sits on the wrong ranges in xradar: reflectivity alone.
    assert all(s.data.shape[-1] == 3 and np.isnan(s.data[..., 1:]).all() for s in sweeps)
    assert np.isfinite(sweeps[0].data[..., 0]).sum() > 1000
    # A blanked radar id (NUL bytes in this file's header) becomes a usable name.
    assert sweeps[0].radar == "unknown"


def test_dual_pol_sweeps_stay_with_the_dual_pol_model(klbb_two_sweeps):
    sweeps, skipped = volume_sweeps(klbb_two_sweeps, single_pol=True)
    assert [s.role for s in sweeps] == ["dual_pol"] and skipped == [1]  # the Doppler pass


@pytest.mark.parametrize("raw, name", [
    ("KLBB", "KLBB"), (b"KLOT", "KLOT"), ("\x00\x00\x00\x00", "unknown"), (None, "unknown"),
    ("../../etc", "etc"), ("None", "unknown")])
def test_radar_names_are_safe_in_paths(raw, name):
    from transforms.radar.reading import radar_name

    assert radar_name(raw) == name


def mixed_archive(format_files, folder):
    """Files of every kind a national archive holds, linked into ``folder``; returns what
    each must end in: (index radar, sweeps classified, by the single-pol model) or the
    dead-letter words."""
    testing = pytest.importorskip("pyart.testing")
    expected = {
        "lbb_volume.h5": ("USLBB", 1, 0), "lbb_volume.nc": ("KLBB", 1, 0),
        "single_pol.h5": ("USLBS", 2, 2), "lbb_1km_360rays.h5": ("USLBC", 1, 0),
        "v.h5": "no reflectivity",
        "msg1_legacy.bz2": ("unknown", 5, 5), "msg31.bz2": ("KATX", 14, 0),
        "cfradial_ppi.nc": ("xsapr-sgp", 1, 1), "uf_ppi.uf": ("xsapr-sg", 1, 0),
        "cfradial_rhi.nc": "is an RHI scan", "sigmet_ppi.sigmet": "not a decodable IRIS/Sigmet",
    }
    keys = {"odim": "lbb_volume.h5", "cf2": "lbb_volume.nc", "single_pol": "single_pol.h5",
            "coarse": "lbb_1km_360rays.h5", "velocity_only": "v.h5"}
    for key, name in keys.items():
        os.link(format_files[key], folder / name)
    for attribute, name in [
            ("NEXRAD_ARCHIVE_MSG1_FILE", "msg1_legacy.bz2"), ("NEXRAD_ARCHIVE_MSG31_FILE",
                                                               "msg31.bz2"),
            ("CFRADIAL_PPI_FILE", "cfradial_ppi.nc"), ("UF_FILE", "uf_ppi.uf"),
            ("CFRADIAL_RHI_FILE", "cfradial_rhi.nc"), ("SIGMET_PPI_FILE", "sigmet_ppi.sigmet")]:
        (folder / name).write_bytes(open(getattr(testing, attribute), "rb").read())
    return expected


@pytest.mark.slow
def test_a_backfill_over_a_mixed_archive_qcs_every_volume_it_can(format_files, radar_registry,
                                                                 tmp_path):
    """Every file ends as one index row or one dead letter; dual-pol sweeps by the dual-pol
    model, legacy and single-pol sweeps by the single-pol model, each named on its rows."""
    from models import registry

    inputs = tmp_path / "in"
    inputs.mkdir()
    expected = mixed_archive(format_files, inputs)
    out = tmp_path / "out"
    radar_qc.run(["--input", str(inputs / "*"), "--output", str(out), "--registry",
                  radar_registry, "--sample_rate", "1.0", "--run_mode", "backfill", "--run_id",
                  "backfill-mixed", "--model_version", "v0001", "--single_pol_version", "v0001"])
    out = out / "backfills" / "backfill-mixed"
    volumes = pads.dataset(str(out / "qc_volumes"), partitioning="hive").to_table().to_pylist()
    dead = pads.dataset(str(out / "dead_letters"), partitioning="hive").to_table().to_pylist()
    ended = {os.path.basename(v["source"]): (v["radar"], v["sweeps_classified"],
                                             v["sweeps_single_pol"]) for v in volumes}
    ended.update({os.path.basename(d["origin"]): d["message"] for d in dead})
    assert len(volumes) + len(dead) == len(expected) == len(ended)
    for name, outcome in expected.items():
        if isinstance(outcome, str):
            assert outcome in ended[name], name
        else:
            assert ended[name] == outcome, name
    single = registry.resolve(radar_registry, "radar_qc_single", "v0001")
    legacy = next(v for v in volumes if v["source"].endswith("msg1_legacy.bz2"))
    assert (legacy["model_name"], legacy["single_pol_model"]) == (
        "radar_qc_single", "radar_qc_single v0001")
    assert legacy["model_sha256"] == single.sha256
    mixed_models = {v["model_name"] for v in volumes}
    assert mixed_models == {"radar_qc", "radar_qc_single"}
    # Each sweep's prediction row names the model that classified it.
    rows = pads.dataset(str(out / "predictions"), partitioning="hive").to_table().to_pylist()
    by_model = {}
    for row in rows:
        by_model.setdefault(row["model_name"], set()).add(os.path.basename(row["source"]))
    assert by_model["radar_qc_single"] == {"single_pol.h5", "msg1_legacy.bz2",
                                           "cfradial_ppi.nc"}
    assert all(r["mean_zdr"] is None and r["mean_dbzh"] is not None
               for r in rows if r["model_name"] == "radar_qc_single")
    # The QC'd file says per sweep which model classified it, and masks what it removed.
    written = xr.open_datatree(legacy["netcdf"])
    assert written["sweep_0"].ds["QC_CLASS"].attrs["qc_model"] == "radar_qc_single v0001"
    assert written["sweep_1"].ds["QC_CLASS"].attrs["qc_source_sweep"] == 0
    # The coarse volume's classes come back on its own 360 rays and 1 km gates, and mask
    # its own moments there.
    coarse_file = next(v["netcdf"] for v in volumes if v["radar"] == "USLBC")
    lowest = xr.open_datatree(coarse_file)["sweep_0"].ds
    classes = lowest["QC_CLASS"].values
    assert classes.shape == lowest["DBZH"].shape == (360, 458)
    gone = (classes == 1) | (classes == 2)
    assert gone.any() and np.isnan(lowest["DBZH"].values[gone]).all()
    assert np.isfinite(lowest["DBZH"].values[classes == 0]).all()
    for volume in volumes:
        assert os.path.exists(volume["netcdf"]) and os.path.exists(volume["quicklook"])


def test_without_a_single_pol_model_configured_the_choice_is_none(radar_registry):
    from apache_beam.options.pipeline_options import PipelineOptions

    def single(*flags):
        options = PipelineOptions(["--registry", radar_registry, *flags])
        return radar_qc.resolve_single_pol(radar_registry,
                                           options.view_as(radar_qc.RadarQcOptions))

    assert single().name == "radar_qc_single"
    assert single("--single_pol_model", "none") is None
    with pytest.raises(Exception, match="no versions of model 'radar_qc_dp'"):
        single("--single_pol_model", "radar_qc_dp")


@pytest.mark.slow
def test_pyart_reads_every_output_format(format_files, radar_registry, tmp_path):
    """The field's tool opens the QC'd CF/Radial 1.4 with ``read_cfradial`` (and ``read``),
    the ODIM_H5 with its ODIM reader and the CF/Radial 2 through its xradar bridge, and sees
    the masked moments and the classes."""
    pyart = pytest.importorskip("pyart")
    netcdf4 = pytest.importorskip("netCDF4")
    out = tmp_path / "out"
    import xradar

    radar_qc.run(["--input", format_files["odim"], "--output", str(out), "--registry",
                  radar_registry, "--output_formats", "cfradial2,cfradial1,odim"])
    [volume] = pads.dataset(str(out / "qc_volumes"), partitioning="hive").to_table().to_pylist()
    assert volume["cfradial1"].endswith("_qc.cfradial1.nc")
    cfradial1 = pyart.io.read_cfradial(volume["cfradial1"])
    assert type(pyart.io.read(volume["cfradial1"])).__name__ == "Radar"
    odim = pyart.aux_io.read_odim_h5(volume["odim_h5"], file_field_names=True)
    # CF/Radial 2: Py-ART 2.3's own reader does not take it; its xradar bridge does.
    cfradial2 = pyart.xradar.Xradar(xradar.io.open_cfradial2_datatree(volume["netcdf"]))
    for radar in (cfradial1, odim, cfradial2):
        assert {"DBZH", "ZDR", "RHOHV", "PHIDP", "QC_CLASS"} <= set(radar.fields)
        assert radar.nsweeps == 2
        classes = np.asarray(radar.fields["QC_CLASS"]["data"])
        dbzh = np.ma.masked_invalid(radar.fields["DBZH"]["data"])
        first = radar.get_slice(0)
        gone = np.isin(classes[first], (1, 2))
        assert gone.any() and np.ma.getmaskarray(dbzh[first])[gone].all()
        kept = classes[first] == 0
        assert not np.ma.getmaskarray(dbzh[first])[kept].any()
    # Packed as int16, not float64; both readers give the same reflectivity (packing aside).
    with netcdf4.Dataset(volume["cfradial1"]) as nc:
        assert nc["DBZH"].dtype == np.int16 and nc.version == "1.4"
    both = ~np.ma.getmaskarray(cfradial1.fields["DBZH"]["data"]) & ~np.ma.getmaskarray(
        np.ma.masked_invalid(odim.fields["DBZH"]["data"]))
    assert np.abs(cfradial1.fields["DBZH"]["data"][both]
                  - odim.fields["DBZH"]["data"][both]).max() < 0.6


def test_cfradial1_refuses_a_volume_whose_sweeps_lie_on_other_gates(tmp_path):
    """Legacy NEXRAD: reflectivity on 1 km gates, Doppler passes on 250 m gates from -375 m;
    CF/Radial 1's one range coordinate cannot hold both, and the refusal says so."""
    testing = pytest.importorskip("pyart.testing")
    from transforms.radar.cfradial1 import CfRadial1Error
    from transforms.radar.volumes import write_cfradial1

    tree = open_volume(testing.NEXRAD_ARCHIVE_MSG1_FILE)
    with pytest.raises(CfRadial1Error, match="sweep 0's gates \\(0 m every 1000 m\\) lie "
                                             "elsewhere than the volume's \\(-375 m every 250 m"
                                             "\\): write CF/Radial 2 or ODIM_H5"):
        write_cfradial1(tree, str(tmp_path / "legacy.nc"))
    assert not list(tmp_path.iterdir())  # nothing half written


def test_unknown_output_formats_are_refused():
    from apache_beam.options.pipeline_options import PipelineOptions

    with pytest.raises(ValueError, match="--output_formats takes cfradial2, cfradial1, odim; got "
                                         "'cfradial2,gif'"):
        radar_qc.resolve(PipelineOptions(["--input", "x", "--output_formats", "cfradial2,gif"]))


def test_a_single_pol_copy_of_a_real_volume_keeps_its_single_pol_moments(klbb_path, tmp_path):
    from transforms.radar.synthetic_volumes import write_single_pol_copy

    path = write_single_pol_copy(klbb_path, str(tmp_path / "klbb_sp.h5"), sweeps=2)
    tree = open_volume(path)
    assert tree.attrs["source_format"] == formats.ODIM
    sweeps, skipped = volume_sweeps(tree, single_pol=True)
    # No dual-pol sweep to take classes from: the Doppler pass is classified itself, with
    # its velocity and spectrum width.
    assert [s.role for s in sweeps] == ["single_pol", "single_pol"] and skipped == []
    assert np.isnan(sweeps[0].data[..., 1]).all() and np.isfinite(sweeps[1].data[..., 1]).any()
    assert sweeps[0].radar == "KLBB-SP"  # its outputs do not replace the original's
    assert {v for v in tree["sweep_1"].ds.data_vars if tree["sweep_1"].ds[v].ndim == 2} == {
        "DBZH", "VRADH", "WRADH"}
