"""The radar QC pipeline end to end: batch on the real KLBB volume with bad files beside it,
streaming from a watched directory fed the real KLOT chunks one by one."""

import bz2
import datetime
import gzip
import os
import shutil
import threading
import time

import numpy as np
import pyarrow.dataset as pads
import pytest

from models.radar_qc.vocabulary import unpack_mask
from pipelines import radar_qc
from tests.conftest import DATA_DIR, KLOT_CHUNKS, check_sweeps_ahead_of_volume
from transforms.radar.rows import PREDICTION_SCHEMA, VOLUME_SCHEMA
from transforms.radar.volumes import QC_CLASS, SweepKey

pytestmark = pytest.mark.slow  # pipeline runs; the fast tier is -m 'not slow'


KDMX = DATA_DIR / "radar" / "network" / "KDMX20250101_225441_V06"


def read(path):
    return pads.dataset(str(path), partitioning="hive").to_table()


def klbb_index(out) -> dict:
    [row] = [r for r in read(out / "qc_volumes").to_pylist() if r["radar"] == "KLBB"]
    return row


def first_klot_chunks(count: int) -> bytes:
    """The first ``count`` real-time chunks of the real KLOT volume, concatenated: an archive
    file cut short (what a transfer that died leaves)."""
    names = sorted(os.listdir(KLOT_CHUNKS), key=lambda n: int(n.split("-")[2]))
    return b"".join((KLOT_CHUNKS / n).read_bytes() for n in names[:count])


def radar_corpus(klbb: bytes, klot_cut: bytes, other: bytes) -> dict[str, bytes]:
    """Files a radar archive folder can hold, made from the real volumes or from nothing:
    {name: content}. The two QC'd ones start with the radar's name, and ``other`` (a volume
    of another radar) with 50 kB of noise written into it is QC'd without the cuts the noise
    falls in; every other one is a dead letter."""
    noise = np.random.default_rng(0).bytes(50_000)
    return {
        "KLBB20160601_150025_V06": klbb,
        "KLOT20260328_201457_V06_cut_short": klot_cut,       # 4 of its 12 cuts arrived whole
        "cut_at_200kB": klbb[:200_000],                      # no sweep arrived whole
        "header_only": klbb[:24],                            # the archive's volume header
        "header_then_noise": klbb[:24] + noise,
        "random.bin": noise,
        "zeros.bin": bytes(100_000),
        "empty": b"",
        "notes.txt": b"not a radar volume\n",
        "volume.json": b'{"radar": "KLBB", "sweeps": []}',
        "picture.png": b"\x89PNG\r\n\x1a\n" + noise[:2000],
        "odim_like.h5": b"\x89HDF\r\n\x1a\n" + bytes(500),
        "noise.gz": gzip.compress(noise),
        "not_gzip.gz": b"plain text named .gz\n",
        "noise.bz2": bz2.compress(noise),
        "gzip_cut_short.gz": gzip.compress(klbb[:400_000])[:100_000],
        "no_sweeps.nc": b"CDF\x01" + bytes(200),
        "middle_corrupted": other[:700_000] + noise + other[750_000:],
    }


# What a radar person reads for each kind of bad file (the file kind from its first bytes and
# size, then why it cannot be QC'd).
NOT_LEVEL2 = ("not a radar format read here (those are NEXRAD Level II, ODIM_H5, GAMIC "
              "HDF5")
DEAD_REASONS = {
    "cut_at_200kB": "NEXRAD Level II archive (message 31), 200,000 bytes: decoded as NEXRAD "
                    "Level II, but holds no complete sweep",
    "header_only": "24 bytes: not a decodable NEXRAD Level II volume: a record does not have "
                   "the layout Level II requires",
    "header_then_noise": "50,024 bytes: not a decodable NEXRAD Level II volume: a record",
    "random.bin": f"binary file of no known radar format, 50,000 bytes: {NOT_LEVEL2}",
    "zeros.bin": f"binary file of no known radar format, 100,000 bytes: {NOT_LEVEL2}",
    "empty": f"empty file (0 bytes): {NOT_LEVEL2}",
    "notes.txt": f"text file, 19 bytes: {NOT_LEVEL2}",
    "volume.json": f"text file, 31 bytes: {NOT_LEVEL2}",
    "picture.png": f"2,008 bytes: {NOT_LEVEL2}",
    "odim_like.h5": "HDF5 file (ODIM_H5, GAMIC or NetCDF-4), 508 bytes: a damaged HDF5 file",
    "noise.gz": "gzip-compressed file, ",
    "not_gzip.gz": "text file, 21 bytes: cannot decompress: not the compressed data its name "
                   "says",
    "noise.bz2": f"holding a binary file of no known radar format, 50,000 bytes: {NOT_LEVEL2}",
    "gzip_cut_short.gz": "cannot decompress: the compressed stream ends early",
    "no_sweeps.nc": f"NetCDF classic file, 204 bytes: {NOT_LEVEL2}",
}


@pytest.fixture(scope="module")
def batch_run(klbb_path, radar_registry, tmp_path_factory):
    """The real KLBB volume, a KLOT volume cut short and 16 kinds of bad file, QC'd in one
    batch run."""
    if not KLOT_CHUNKS.exists() or not KDMX.exists():
        pytest.skip(f"real data not found at {KLOT_CHUNKS} or {KDMX}")
    inputs = tmp_path_factory.mktemp("volumes")
    with open(klbb_path, "rb") as f:
        corpus = radar_corpus(f.read(), first_klot_chunks(27), KDMX.read_bytes())
    for name, content in corpus.items():
        (inputs / name).write_bytes(content)
    out = tmp_path_factory.mktemp("out")
    radar_qc.run(["--input", str(inputs / "*"), "--output", str(out), "--registry",
                  radar_registry, "--sample_rate", "1.0", "--run_id", "radar-test",
                  "--check_uncertainty"])
    return inputs, out


def test_each_volume_says_whether_its_qc_is_uncertain(batch_run):
    """The share of echo where the UNet's call differs from both references, and the flag
    above the configured share, in the index row; the run summary counts the flagged."""
    from transforms.radar.reference import load_parameters

    _, out = batch_run
    threshold = load_parameters()[0].uncertain_share
    volumes = read(out / "qc_volumes").to_pylist()
    assert len(volumes) == 3
    for row in volumes:
        assert 0.0 <= row["qc_uncertain_share"] <= 1.0
        assert row["qc_uncertain"] == (row["qc_uncertain_share"] > threshold)
    # A tiny test model: far from the references on much of the echo, so some are flagged.
    assert any(row["qc_uncertain"] for row in volumes)
    # Each sampled dual-pol sweep carries its own share (the monitoring watches it per tilt);
    # the volume's share lies among its sweeps'.
    sweeps = read(out / "predictions").to_pylist()
    for volume in volumes:
        shares = [r["qc_uncertain_share"] for r in sweeps if r["volume_id"] == volume["volume_id"]
                  and r["qc_uncertain_share"] is not None]
        assert shares and min(shares) - 1e-9 <= volume["qc_uncertain_share"] <= max(shares) + 1e-9


def test_every_input_file_ends_in_exactly_one_output(batch_run):
    inputs, out = batch_run
    volumes = read(out / "qc_volumes").to_pylist()
    dead = read(out / "dead_letters").to_pylist()
    origins = sorted([v["source"] for v in volumes] + [d["origin"] for d in dead])
    assert len(origins) == len(set(origins)) >= 18
    assert origins == sorted(str(p) for p in inputs.iterdir())
    assert sorted(os.path.basename(v["source"]) for v in volumes) == [
        "KLBB20160601_150025_V06", "KLOT20260328_201457_V06_cut_short", "middle_corrupted"]
    reasons = {os.path.basename(d["origin"]): d["message"] for d in dead}
    for name, reason in DEAD_REASONS.items():
        assert reason in reasons[name], (name, reasons[name])
    for record in dead:
        assert record["stage"] == "decode" and record["error_class"] == "RadarReadError"
        assert record["origin"] in record["message"]
        assert "Traceback" not in record["message"]
        assert record["raw"] is None  # bytes of a bad file are referenced, not copied
        assert record["pipeline"] == "radar_qc" and record["run_id"] == "radar-test"


def test_a_volume_cut_short_keeps_its_whole_sweeps_and_is_flagged(batch_run):
    _, out = batch_run
    rows = {os.path.basename(v["source"]): v for v in read(out / "qc_volumes").to_pylist()}
    whole = rows["KLBB20160601_150025_V06"]
    assert (whole["sweeps_total"], whole["sweeps_expected"], whole["complete"]) == (11, 11, True)
    cut = rows["KLOT20260328_201457_V06_cut_short"]
    assert (cut["sweeps_total"], cut["sweeps_expected"], cut["complete"]) == (4, 12, False)
    assert 0 < cut["sweeps_classified"] <= 4
    # 50 kB of noise inside a KDMX volume: the cuts it falls in are lost (the split cut at
    # 1.49 deg), the others QC'd, and the row says what was lost and where.
    corrupted = rows["middle_corrupted"]
    assert (corrupted["radar"], corrupted["complete"], corrupted["sweeps_total"]) == (
        "KDMX", False, 6)
    assert corrupted["damaged_cuts"] == (
        "cut 3 (1.49 deg) lost: compressed record 19 of 43 (byte 692,963) is corrupt (bzip2: "
        "Invalid data stream); cut 4 (1.49 deg) lost: compressed record 19 of 43 (byte "
        "692,963) is corrupt (bzip2: Invalid data stream)")
    assert os.path.exists(cut["netcdf"]) and os.path.exists(cut["quicklook"])


def test_qcd_volume_is_cf_radial_netcdf_with_masked_moments(batch_run):
    import netCDF4
    import xradar

    _, out = batch_run
    index = klbb_index(out)
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
    index = klbb_index(out)
    with open(index["quicklook"], "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert os.path.getsize(index["quicklook"]) > 20_000


def test_sampled_sweeps_carry_versions_counts_and_the_packed_mask(batch_run, radar_model_ref):
    _, out = batch_run
    table = read(out / "predictions")
    assert set(PREDICTION_SCHEMA.names) <= set(table.schema.names)
    rows = sorted((r for r in table.to_pylist() if r["radar"] == "KLBB"),
                  key=lambda r: r["sweep_number"])
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
    # Each dual-pol sweep was also written alone as its chunks completed.
    assert check_sweeps_ahead_of_volume(out) == volumes[0]["sweeps_classified"]


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
        radar_qc.resolve(PipelineOptions(extra))


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
