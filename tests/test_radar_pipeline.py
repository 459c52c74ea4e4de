"""The radar QC pipeline end to end: batch on the real KLBB volume with bad files beside it,
streaming from a watched directory fed the real KLOT chunks one by one."""

import datetime
import os
import shutil
import threading
import time

import numpy as np
import pyarrow.dataset as pads
import pytest

from models.radar_qc.vocabulary import unpack_mask
from pipelines import radar_qc
from tests.conftest import KLOT_CHUNKS
from transforms.radar.rows import PREDICTION_SCHEMA, VOLUME_SCHEMA
from transforms.radar.volumes import QC_CLASS, SweepKey

pytestmark = pytest.mark.slow  # pipeline runs; the fast tier is -m 'not slow'


def read(path):
    return pads.dataset(str(path), partitioning="hive").to_table()


@pytest.fixture(scope="module")
def batch_run(klbb_path, radar_registry, tmp_path_factory):
    """KLBB plus a truncated copy, random bytes and a text file, QC'd in one batch run."""
    inputs = tmp_path_factory.mktemp("volumes")
    shutil.copy(klbb_path, inputs / "KLBB20160601_150025_V06")
    with open(klbb_path, "rb") as f:
        (inputs / "KLBB20160601_150025_V06_truncated").write_bytes(f.read(200_000))
    (inputs / "random.bin").write_bytes(np.random.default_rng(0).bytes(50_000))
    (inputs / "notes.txt").write_text("not a radar volume\n")
    out = tmp_path_factory.mktemp("out")
    radar_qc.run(["--input", str(inputs / "*"), "--output", str(out), "--registry",
                  radar_registry, "--sample_rate", "1.0", "--run_id", "radar-test"])
    return inputs, out


def test_every_input_file_ends_in_exactly_one_output(batch_run):
    inputs, out = batch_run
    volumes = read(out / "qc_volumes").to_pylist()
    dead = read(out / "dead_letters").to_pylist()
    origins = sorted([v["source"] for v in volumes] + [d["origin"] for d in dead])
    assert origins == sorted(str(p) for p in inputs.iterdir())
    assert [v["volume_id"] for v in volumes] == ["KLBB-20160601T150025Z"]
    assert len(dead) == 3
    for record in dead:
        assert record["stage"] == "decode" and record["error_class"] == "RadarReadError"
        assert record["origin"] in record["message"]
        assert record["raw"] is None  # bytes of a bad file are referenced, not copied
        assert record["pipeline"] == "radar_qc" and record["run_id"] == "radar-test"


def test_qcd_volume_is_cf_radial_netcdf_with_masked_moments(batch_run):
    import netCDF4
    import xradar

    _, out = batch_run
    index = read(out / "qc_volumes").to_pylist()[0]
    assert set(VOLUME_SCHEMA.names) <= set(read(out / "qc_volumes").schema.names)
    assert index["sweeps_total"] == 11 and index["sweeps_classified"] == 9
    tree = xradar.io.open_cfradial2_datatree(index["netcdf"])
    assert len(tree.children) == 11
    with netCDF4.Dataset(index["netcdf"]) as raw:  # xradar's reader drops custom attributes
        assert raw.getncattr("qc_model_name") == "radar_qc"
        assert raw.getncattr("qc_model_version") == "v0001"
        # The Doppler pass of the lowest cut takes the classes of its surveillance sweep.
        qc_class = raw.groups["sweep_1"].variables[QC_CLASS]
        assert qc_class.getncattr("qc_applied") == 1
        assert qc_class.getncattr("qc_source_sweep") == 0
    lowest = tree["sweep_0"].ds
    classes = lowest[QC_CLASS].values
    removed = (classes == 1) | (classes == 2)
    assert removed.any()
    for moment in ("DBZH", "ZDR", "RHOHV", "PHIDP"):
        assert np.isnan(lowest[moment].values[removed]).all()
    kept = classes == 0
    assert np.isfinite(lowest["DBZH"].values[kept]).all()
    assert np.isnan(tree["sweep_1"].ds["VRADH"].values[
        np.isin(tree["sweep_1"].ds[QC_CLASS].values, (1, 2))]).all()


def test_quicklook_is_a_png(batch_run):
    _, out = batch_run
    index = read(out / "qc_volumes").to_pylist()[0]
    with open(index["quicklook"], "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert os.path.getsize(index["quicklook"]) > 20_000


def test_sampled_sweeps_carry_versions_counts_and_the_packed_mask(batch_run, radar_model_ref):
    _, out = batch_run
    table = read(out / "predictions")
    assert set(PREDICTION_SCHEMA.names) <= set(table.schema.names)
    rows = sorted(table.to_pylist(), key=lambda r: r["sweep_number"])
    assert [r["sweep_number"] for r in rows] == [0, 2, 4, 5, 6, 7, 8, 9, 10]
    for row in rows:
        assert row["prediction_id"] == f"KLBB-20160601T150025Z-s{row['sweep_number']:02d}"
        assert row["model_version"] == "v0001" and row["model_sha256"] == radar_model_ref.sha256
        assert row["radar"] == "KLBB" and row["dt"] == "2016-06-01"
        assert row["event_time"] == datetime.datetime(2016, 6, 1, 15, 0, 25,
                                                      tzinfo=datetime.UTC)
        mask = unpack_mask(row["mask_packed"], row["mask_shape"])
        assert row["mask_shape"] == [720, 1840]
        assert mask.sum() == row["gates_biological"] + row["gates_clutter_noise"]
        assert row["gates_echo"] == (row["gates_meteorological"] + row["gates_biological"]
                                     + row["gates_clutter_noise"])
        assert row["fraction_removed"] == pytest.approx(mask.sum() / row["gates_echo"])
    assert rows[0]["elevation"] == pytest.approx(0.48, abs=0.01)


def test_a_volume_the_model_failed_on_goes_to_dead_letters():
    from transforms.radar.dofns import inference_dead_letters
    from transforms.radar.volumes import DecodedVolume

    now = datetime.datetime.now(datetime.UTC)
    key = SweepKey("KLBB-20160601T150025Z", "KLBB", now, 0, 0.5, ("/data/KLBB",), 2, (), now)
    volume = DecodedVolume(tree=None, keys=[key])
    [record] = inference_dead_letters(([(volume, np.zeros((1, 2, 2, 4)))],
                                       ValueError("bad shape")),
                                      {"pipeline": "radar_qc", "run_id": "r"})
    assert record["stage"] == "inference" and record["origin"] == "/data/KLBB"
    assert record["error_class"] == "InferenceFailed"
    assert "KLBB-20160601T150025Z: sweeps not classified: ValueError: bad shape" in \
        record["message"]


def test_streaming_qcs_chunks_landing_one_by_one_in_a_watched_directory(radar_registry,
                                                                         tmp_path):
    from services.chunk_feed import chunk_files, feed_chunks

    if not KLOT_CHUNKS.exists():
        pytest.skip(f"real data not found at {KLOT_CHUNKS}")
    landing, out = tmp_path / "landing", tmp_path / "out"
    landing.mkdir()
    args = ["--streaming", "--chunk_dir", str(landing), "--output", str(out), "--registry",
            radar_registry, "--sample_rate", "1.0", "--poll_secs", "0.5",
            "--stop_after_secs", "30", "--window_secs", "5"]
    thread = threading.Thread(target=radar_qc.run, args=(args,))
    thread.start()
    time.sleep(6)
    paths = chunk_files(str(KLOT_CHUNKS))
    feed_chunks(paths, str(landing), "KLOT", delay_secs=0.05, shuffle_seed=1)
    feed_chunks(paths[:3], str(landing), "KLOT")  # duplicates, as a re-sending bucket does
    (landing / "KLOT" / "notes.txt").write_text("misplaced\n")
    thread.join(timeout=180)
    assert not thread.is_alive()

    volumes = read(out / "qc_volumes").to_pylist()
    assert [v["volume_id"] for v in volumes] == ["KLOT-20260328T201457Z"]
    assert volumes[0]["run_mode"] == "streaming"
    assert os.path.exists(volumes[0]["netcdf"]) and os.path.exists(volumes[0]["quicklook"])
    dead = read(out / "dead_letters").to_pylist()
    assert [(d["stage"], os.path.basename(d["origin"])) for d in dead] == [
        ("assemble", "notes.txt")]
    sweeps = read(out / "predictions").to_pylist()
    assert len(sweeps) == volumes[0]["sweeps_classified"]


@pytest.mark.parametrize("extra, message", [
    (["--input", "a", "--chunk_dir", "b", "--streaming"],
     "give one source, not --input, --chunk_dir"),
    (["--chunk_dir", "b"], "--chunk_dir is a streaming source and needs --streaming"),
    (["--input", "a", "--streaming"], "--input is a batch source"),
    (["--input", "a", "--max_batch_size", "0"], "--max_batch_size must be at least 1"),
])
def test_conflicting_options_are_rejected_with_the_flags_named(extra, message):
    from apache_beam.options.pipeline_options import PipelineOptions

    with pytest.raises(ValueError, match=message):
        radar_qc.validate(PipelineOptions(extra))


def test_volumes_on_an_object_store_are_read_and_written_through_beam_filesystems(
        radar_registry, klbb_path):
    """gs:// in production: the archive is copied to the worker for xradar, every output is
    written through FileSystems."""
    import glob
    import gzip
    import uuid

    from tests.object_store import PREFIX, local

    bucket = f"{PREFIX}radar-{uuid.uuid4().hex[:8]}"
    os.makedirs(local(f"{bucket}/in"))
    with open(klbb_path, "rb") as source, \
            gzip.open(local(f"{bucket}/in/KLBB20160601_150025_V06.gz"), "wb") as sink:
        shutil.copyfileobj(source, sink)
    radar_qc.run(["--input", f"{bucket}/in/*", "--registry", radar_registry,
                  "--output", f"{bucket}/out", "--sample_rate", "1.0"])
    out = local(f"{bucket}/out")
    volumes = pads.dataset(f"{out}/qc_volumes", partitioning="hive").to_table().to_pylist()
    assert [v["source"] for v in volumes] == [f"{bucket}/in/KLBB20160601_150025_V06.gz"]
    assert volumes[0]["netcdf"].startswith(PREFIX) and volumes[0]["quicklook"].startswith(PREFIX)
    assert glob.glob(f"{out}/volumes/radar=KLBB/dt=2016-06-01/*_qc.nc")
    assert glob.glob(f"{out}/quicklooks/radar=KLBB/dt=2016-06-01/*.png")
