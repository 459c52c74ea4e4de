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
