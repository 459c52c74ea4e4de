"""Streaming assembly of the real KLOT chunks with TestStream."""

import random

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import TimestampedValue

from tests.conftest import DATA_DIR
from transforms.radar.chunk_assembly import AssembleVolumes

KLOT = DATA_DIR / "radar" / "nexrad_chunks_KLOT"
T0 = 1_774_728_897  # 2026-03-28T20:14:57Z


@pytest.fixture(scope="module")
def chunk_paths():
    if not KLOT.exists():
        pytest.skip(f"real data not found at {KLOT}")
    return sorted(str(p) for p in KLOT.iterdir())


def _run(paths, timeout_secs=60):
    stream = TestStream()
    for i, path in enumerate(paths):
        stream = stream.add_elements([TimestampedValue(("KLOT", path), T0 + i)])
    stream = stream.advance_watermark_to(T0 + len(paths) + timeout_secs + 1)
    stream = stream.advance_watermark_to_infinity()
    options = PipelineOptions(streaming=True)
    p = TestPipeline(options=options)
    result = p | stream | AssembleVolumes(timeout_secs, "radar_qc", "run-1")
    return p, result


def test_shuffled_and_duplicated_chunks_make_exactly_one_ordered_volume(chunk_paths):
    arrivals = chunk_paths + random.Random(1).sample(chunk_paths, 8)
    random.Random(2).shuffle(arrivals)
    p, result = _run(arrivals)
    assert_that(result.volumes, equal_to([(("KLOT", "2026-03-28T20:14:57+00:00"), chunk_paths)]),
                label="OneOrderedVolume")
    assert_that(result.dead_letters, equal_to([]), label="NoDeadLetters")
    p.run().wait_until_finish()


def test_incomplete_volume_times_out_to_dead_letters_with_the_missing_chunks(chunk_paths):
    arrivals = [p for p in chunk_paths if not p.endswith(("-007-I", "-030-I"))]
    p, result = _run(arrivals)
    assert_that(result.volumes, equal_to([]), label="NoVolume")
    reasons = result.dead_letters | beam.Map(
        lambda d: (d["stage"], d["error_class"], "missing chunks [7, 30]" in d["message"]))
    assert_that(reasons, equal_to([("assemble", "IncompleteVolume", True)]),
                label="OneDeadLetter")
    p.run().wait_until_finish()


def test_each_cut_is_emitted_once_as_soon_as_its_chunks_are_there_in_any_order(chunk_paths):
    from transforms.radar.chunk_assembly import SWEEPS, ended_cuts

    ends = {cut: i for i, path in enumerate(chunk_paths) for cut in ended_cuts(path)}
    # KLOT 2026-03-28 20:14:57: 12 cuts, the metadata alone in the start chunk.
    assert ends == {1: 6, 2: 12, 3: 18, 4: 24, 5: 30, 6: 36, 7: 39, 8: 42, 9: 45, 10: 48,
                    11: 51, 12: 54}
    arrivals = chunk_paths + random.Random(3).sample(chunk_paths, 8)
    random.Random(4).shuffle(arrivals)
    stream = TestStream()
    for i, path in enumerate(arrivals):
        stream = stream.add_elements([TimestampedValue(("KLOT", path), T0 + i)])
    stream = stream.advance_watermark_to_infinity()
    p = TestPipeline(options=PipelineOptions(streaming=True))
    result = p | stream | AssembleVolumes(60, "radar_qc", "run-1", emit_sweeps=True)
    # Each cut with the chunks from the first up to the one holding its end radial, or
    # more (a later chunk arrived first and completed several cuts at once).
    cuts = result[SWEEPS] | beam.MapTuple(lambda key, value: (
        key, value[1], value[0][:ends[value[1]] + 1] == tuple(chunk_paths[:ends[value[1]] + 1]),
        len(value[0]) > ends[value[1]]))
    key = ("KLOT", "2026-03-28T20:14:57+00:00")
    assert_that(cuts, equal_to([(key, cut, True, True) for cut in range(1, 13)]),
                label="EachCutOnce")
    p.run().wait_until_finish()


def test_a_cut_read_alone_from_the_chunks_so_far_is_the_volumes_sweep(chunk_paths):
    import numpy as np

    from transforms.radar.reading import open_volume, sweep_names

    whole = open_volume(chunk_paths)
    one = open_volume(chunk_paths[:19], only_cuts=frozenset({3}))  # cut 3 ends in chunk 19
    assert sweep_names(one) == ["sweep_0"] and "damaged_cuts" not in one.attrs
    a, b = one["sweep_0"].ds, whole["sweep_2"].ds
    assert float(a["sweep_fixed_angle"]) == float(b["sweep_fixed_angle"])
    assert sorted(a.data_vars) == sorted(b.data_vars)
    for name in ("DBZH", "ZDR", "RHOHV", "PHIDP"):
        np.testing.assert_array_equal(a[name].values, b[name].values)
    np.testing.assert_array_equal(a["azimuth"].values, b["azimuth"].values)
    # A cut whose end radial has not arrived is not read (and says so).
    partial = open_volume(chunk_paths[:16], only_cuts=frozenset({3, 2}))
    assert sweep_names(partial) == ["sweep_0"]
    assert "cut 3" in partial.attrs["damaged_cuts"]
