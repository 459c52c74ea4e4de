"""Reading the real NEXRAD volumes: archive file, chunk set, bad input."""

import bz2
import gzip
import pathlib
import random

import numpy as np
import pytest

from tests.conftest import DATA_DIR
from transforms.radar.reading import (
    CHANNELS,
    N_AZIMUTH,
    N_RANGE,
    IncompleteChunksError,
    RadarReadError,
    open_volume,
    order_chunks,
    parse_chunk_name,
    regrid_indices,
    volume_sweeps,
)

KLBB = DATA_DIR / "radar" / "KLBB20160601_150025_V06"
KLOT = DATA_DIR / "radar" / "nexrad_chunks_KLOT"


@pytest.fixture(scope="module")
def klbb_sweeps():
    if not KLBB.exists():
        pytest.skip(f"real data not found at {KLBB}")
    return volume_sweeps(open_volume(str(KLBB)))


@pytest.fixture(scope="module")
def klot_chunks():
    if not KLOT.exists():
        pytest.skip(f"real data not found at {KLOT}")
    return [parse_chunk_name(str(p)) for p in sorted(KLOT.iterdir())]


def test_klbb_archive_decodes_to_fixed_layout_sweeps(klbb_sweeps):
    sweeps, skipped = klbb_sweeps
    assert len(sweeps) + len(skipped) == 11
    lowest = sweeps[0]
    assert (lowest.radar, lowest.sweep_number) == ("KLBB", 0)
    assert lowest.volume_time.isoformat().startswith("2016-06-01T15:00")
    assert lowest.elevation == pytest.approx(0.48, abs=0.01)
    assert lowest.data.shape == (N_AZIMUTH, N_RANGE, len(CHANNELS))
    assert lowest.data.dtype == np.float32
    assert lowest.source_shape == (720, 1832)
    assert lowest.ranges[0] == pytest.approx(2125.0) and np.isnan(lowest.ranges[-1])
    # Gates past the decoded 1,832 are padding.
    assert np.isnan(lowest.data[:, 1832:, :]).all()
    dbz, zdr, rhohv = (lowest.data[..., CHANNELS.index(c)] for c in ("DBZH", "ZDR", "RHOHV"))
    assert -35 <= np.nanmin(dbz) and np.nanmax(dbz) <= 95
    assert -8.5 <= np.nanmin(zdr) and np.nanmax(zdr) <= 8.5
    assert 0.0 <= np.nanmin(rhohv) and np.nanmax(rhohv) <= 1.06
    assert np.isfinite(dbz).mean() > 0.01  # there is weather in this volume


def test_compressed_archives_decode_the_same(klbb_sweeps, tmp_path):
    raw = KLBB.read_bytes()
    (tmp_path / "v.gz").write_bytes(gzip.compress(raw))
    (tmp_path / "v.bz2").write_bytes(bz2.compress(raw))
    for name in ("v.gz", "v.bz2"):
        sweeps, _ = volume_sweeps(open_volume(str(tmp_path / name)))
        np.testing.assert_array_equal(sweeps[0].data, klbb_sweeps[0][0].data)


def test_klot_chunks_in_order_decode_and_split_cut_doppler_passes_are_skipped(klot_chunks):
    ordered = order_chunks(klot_chunks)
    assert [c.sequence for c in ordered] == list(range(1, 56))
    sweeps, skipped = volume_sweeps(open_volume([c.path for c in ordered]))
    assert len(sweeps) + len(skipped) == 12
    assert skipped == [1, 3, 5]  # Doppler passes of the three split cuts: no ZDR/RHOHV
    assert sweeps[0].radar == "KLOT"
    assert sweeps[0].volume_time.isoformat() == "2026-03-28T20:14:57+00:00"
    # Every radial is read: xradar alone keeps 717 of sweep 4's 720 (its record 26 holds 123
    # messages, and xradar reads 120 per record; transforms/radar/level2_records.py).
    assert {s.source_shape[0] for s in sweeps} == {720, 360}
    assert all(s.data.shape == (N_AZIMUTH, N_RANGE, 4) for s in sweeps)


def test_chunk_order_survives_shuffling_and_duplicates(klot_chunks):
    shuffled = klot_chunks + random.Random(3).sample(klot_chunks, 10)
    random.Random(4).shuffle(shuffled)
    assert [c.path for c in order_chunks(shuffled)] == [c.path for c in klot_chunks]


def test_incomplete_chunk_sets_name_what_is_missing(klot_chunks):
    without = [c for c in klot_chunks if c.sequence not in (7, 30)]
    with pytest.raises(IncompleteChunksError, match=r"missing chunks \[7, 30\]") as error:
        order_chunks(without)
    assert error.value.missing == [7, 30]
    with pytest.raises(IncompleteChunksError, match="end chunk not received"):
        order_chunks(klot_chunks[:-1])


def test_chunk_names_are_parsed_and_checked():
    chunk = parse_chunk_name("/x/20260328-201457-055-E")
    assert (chunk.sequence, chunk.kind, chunk.volume_start.hour) == (55, "E", 20)
    with pytest.raises(RadarReadError, match="is not named"):
        parse_chunk_name("/x/notes.txt")


def test_azimuth_regridding_is_nearest_and_circular():
    # 360 rays at 0.5, 1.5, ...: each is used for the two 0.5-degree cells around it.
    rows = regrid_indices(np.arange(360) + 0.5, 720)
    assert list(rows[:4]) == [0, 0, 1, 1] and rows[-1] == 359
    # A ray at 359.9 is the nearest for the cell at 0.25 across north.
    assert regrid_indices(np.array([180.0, 359.9]), 720)[0] == 1


@pytest.mark.parametrize(("content", "described"), [
    (b"", "empty file (0 bytes)"),
    (b"\x00" * 100, "binary file of no known radar format, 100 bytes"),
    (b"AR2V0006." + bytes(range(256)) * 10, "NEXRAD Level II archive (message 31), 2,569 bytes"),
    (b"hello, not a radar file\n" * 50, "text file, 1,200 bytes"),
    (b"\x89HDF\r\n\x1a\n" + bytes(500), "HDF5 file (ODIM_H5, GAMIC or NetCDF-4), 508 bytes"),
])
def test_bad_files_raise_a_read_error_that_says_what_the_file_is(tmp_path, content, described):
    path = tmp_path / "bad"
    path.write_bytes(content)
    with pytest.raises(RadarReadError,
                       match="not a decodable NEXRAD Level II volume|no complete sweep|"
                             "not a radar format read here|a damaged HDF5 file") as error:
        volume_sweeps(open_volume(str(path)))
    assert f"{path}: {described}: " in str(error.value)


def test_truncated_volume_is_rejected_with_the_reason(tmp_path):
    if not KLBB.exists():
        pytest.skip("real data not found")
    path = pathlib.Path(tmp_path / "truncated")
    path.write_bytes(KLBB.read_bytes()[:200_000])  # the first 5% of the volume
    # The first radial record is cut short: no cut is whole, and the words say where it ends.
    with pytest.raises(RadarReadError, match="NEXRAD Level II archive \\(message 31\\), "
                       "200,000 bytes: decoded as NEXRAD Level II, but holds no complete "
                       "sweep \\(the radials after the metadata are lost: the file ends "
                       "inside compressed record 2 of 2 \\(byte 7,404\\), 192,592 of its "
                       "267,119 bytes; no cut of the coverage pattern is in the file whole"):
        volume_sweeps(open_volume(str(path)))
