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
from transforms.radar.volumes import write_cfradial


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
    write_cfradial(klbb_two_sweeps, files["cf2"])
    xradar.io.to_odim(_with_moments(klbb_two_sweeps, {"DBZH", "VRADH", "WRADH"}),
                      files["single_pol"], source="NOD:uslbb")
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


@pytest.mark.slow
def test_odim_and_cfradial_volumes_are_qcd_end_to_end(format_files, radar_registry, tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    for key in ("odim", "cf2", "single_pol", "coarse"):
        os.link(format_files[key], inputs / os.path.basename(format_files[key]))
    out = tmp_path / "out"
    radar_qc.run(["--input", str(inputs / "*"), "--output", str(out), "--registry",
                  radar_registry, "--sample_rate", "1.0", "--output_formats", "cfradial2,odim"])
    volumes = pads.dataset(str(out / "qc_volumes"), partitioning="hive").to_table().to_pylist()
    dead = pads.dataset(str(out / "dead_letters"), partitioning="hive").to_table().to_pylist()
    assert sorted((v["radar"], v["sweeps_classified"]) for v in volumes) == [
        ("KLBB", 1), ("USLBB", 1), ("USLBC", 1)]
    assert [(os.path.basename(d["origin"]), d["stage"]) for d in dead] == [
        ("single_pol.h5", "decode")]
    assert "no single-polarization model configured" in dead[0]["message"]
    for volume in volumes:
        assert os.path.exists(volume["netcdf"]) and os.path.exists(volume["quicklook"])
        assert volume["odim_h5"].endswith("_qc.h5") and os.path.exists(volume["odim_h5"])
    # The coarse volume's classes come back on its own 360 rays and 1 km gates, and mask
    # its own moments there.
    lowest = xr.open_datatree(next(v["netcdf"] for v in volumes if v["radar"] == "USLBC"))[
        "sweep_0"].ds
    classes = lowest["QC_CLASS"].values
    assert classes.shape == lowest["DBZH"].shape == (360, 458)
    gone = (classes == 1) | (classes == 2)
    assert gone.any() and np.isnan(lowest["DBZH"].values[gone]).all()
    assert np.isfinite(lowest["DBZH"].values[classes == 0]).all()


@pytest.mark.slow
def test_pyart_reads_the_odim_output_with_its_own_reader(format_files, radar_registry,
                                                         tmp_path):
    """The field's tool opens the QC'd ODIM_H5 with its ODIM reader and sees the masked
    moments and the classes."""
    pyart = pytest.importorskip("pyart")
    out = tmp_path / "out"
    radar_qc.run(["--input", format_files["odim"], "--output", str(out), "--registry",
                  radar_registry, "--output_formats", "odim"])
    [volume] = pads.dataset(str(out / "qc_volumes"), partitioning="hive").to_table().to_pylist()
    assert volume["netcdf"] is None
    radar = pyart.aux_io.read_odim_h5(volume["odim_h5"], file_field_names=True)
    assert {"DBZH", "ZDR", "RHOHV", "PHIDP", "QC_CLASS"} <= set(radar.fields)
    classes = np.asarray(radar.fields["QC_CLASS"]["data"])
    dbzh = np.ma.masked_invalid(radar.fields["DBZH"]["data"])
    first = radar.get_slice(0)
    gone = np.isin(classes[first], (1, 2))
    assert gone.any() and np.ma.getmaskarray(dbzh[first])[gone].all()
    assert radar.nsweeps == 2


def test_unknown_output_formats_are_refused():
    from apache_beam.options.pipeline_options import PipelineOptions

    with pytest.raises(ValueError, match="--output_formats takes cfradial2, odim; got "
                                         "'cfradial2,gif'"):
        radar_qc.validate(PipelineOptions(["--input", "x", "--output_formats", "cfradial2,gif"]))
