"""The radar QC pipeline's DoFns: decoding volumes, writing QC'd volumes, naming chunks.

Thin wrappers: the work is in ``reading``, ``volumes``, ``rows`` and ``quicklook``.
"""

import logging
import os

import apache_beam as beam

from models.radar_qc.vocabulary import class_counts
from transforms.common.dead_letters import DEAD_LETTERS, dead_letter
from transforms.common.inference import failure_reason
from transforms.common.outputs import is_output_failure
from transforms.common.parquet_sink import utc_date
from transforms.common.progress import Progress
from transforms.radar import rows as radar_rows
from transforms.radar.quicklook import quicklook_png, write_bytes
from transforms.radar.reading import RadarReadError, open_volume, parse_chunk_name
from transforms.radar.volumes import (
    CFRADIAL2_OUT,
    ODIM_OUT,
    apply_qc,
    decode_volume,
    expected_sweeps,
    sweep_count,
    write_cfradial,
    write_odim,
)

LOGGER = logging.getLogger(__name__)
PIPELINE_NAME = "radar_qc"
VOLUMES, QUICKLOOKS = "volumes", "quicklooks"
# Output tag of the sweeps' prediction rows.
PREDICTIONS = "predictions"


class DecodeVolumeFn(beam.DoFn):
    """Source (archive path, or ordered chunk paths) -> ``[(DecodedVolume, stacked dual-pol
    sweeps)]``, the volume decoded once; undecodable -> dead letter.

    The output is a batch of one volume for RunInference without its own batching
    (``with_no_batching``): Beam's BatchElements hands a batch on only when the next element
    arrives, which would hold a second decoded volume (~0.4 GB) in memory for nothing.
    Nothing of a bad file is copied into its dead letter: the origin names it.
    """

    def __init__(self, run_id: str):
        self._run_id = run_id

    def process(self, source: tuple[str, ...]):
        try:
            tree = open_volume(source[0] if len(source) == 1 else list(source))
            yield [decode_volume(tree, source)]
        except RadarReadError as error:
            beam.metrics.Metrics.counter(PIPELINE_NAME, "volumes_rejected").inc()
            yield beam.pvalue.TaggedOutput(DEAD_LETTERS, dead_letter(
                pipeline=PIPELINE_NAME, stage="decode", error=error, raw=None,
                origin=";".join(source), run_id=self._run_id))


class WriteQcVolumeFn(beam.DoFn):
    """(DecodedVolume, PredictionResult of its stacked sweeps) -> its sweeps' prediction rows
    (``predictions`` output), then the masked volume, quicklook and index row (main output).

    The volume is masked in place (it was decoded for this element alone) and dropped when the
    element is done, so a worker holds one volume at a time. A failure while writing goes to
    dead letters with stage "write".
    """

    def __init__(self, output: str, model: tuple[str, str, str], context: dict,
                 total_volumes: int | None = None, output_formats=(CFRADIAL2_OUT,)):
        self._output = output
        self._model = model
        self._context = context
        self._total = total_volumes
        self._formats = tuple(output_formats)

    def setup(self):
        # A volume takes seconds: every one is worth a line.
        self._progress = Progress("volumes QC'd", "volume", self._total, every_secs=0)

    def process(self, element):
        volume, result = element
        for i, key in enumerate(volume.keys):
            yield beam.pvalue.TaggedOutput(PREDICTIONS, radar_rows.sweep_row(
                key, result.example[i], result.inference[i], result.model_id, self._context))
        try:
            yield self._write(volume, {k.sweep_number: c
                                       for k, c in zip(volume.keys, result.inference)})
        except Exception as error:  # noqa: BLE001 - any write failure is this volume's alone
            if is_output_failure(error):
                raise  # a full disk or a read-only folder stops the run (see pipelines.options)
            LOGGER.exception("writing %s failed", volume.first.volume_id)
            yield beam.pvalue.TaggedOutput(DEAD_LETTERS, radar_rows.volume_dead_letter(
                volume.first, "write", error, self._context))
        finally:
            self._progress.add(1, volume.first.volume_id)
            # The volume is done: release the reader's file handles now, not at garbage
            # collection (memory itself plateaus either way; see README, Benchmarks).
            volume.tree.close()

    def _write(self, volume, classes_by_sweep: dict) -> dict:
        name, version, sha256 = self._model
        key, tree = volume.first, volume.tree
        lowest = min(classes_by_sweep, key=lambda n: (
            float(tree[f"sweep_{n}"].ds["sweep_fixed_angle"].values), n))
        raw_lowest = tree[f"sweep_{lowest}"].to_dataset(inherit=False).copy(deep=True)
        sweeps_in_volume, expected = sweep_count(tree), expected_sweeps(tree)
        if expected is not None and sweeps_in_volume < expected:
            beam.metrics.Metrics.counter(PIPELINE_NAME, "volumes_incomplete").inc()
            LOGGER.warning("%s: %d of the %d sweeps of its coverage pattern arrived whole; "
                           "those are QC'd and its index row says complete=false",
                           key.volume_id, sweeps_in_volume, expected)
        qc = apply_qc(tree, classes_by_sweep, {
            "qc_model_name": name, "qc_model_version": version, "qc_model_sha256": sha256,
            "qc_run_id": self._context["run_id"]}, in_place=True)
        folder = f"radar={key.radar}/dt={utc_date(key.volume_time)}"
        base = f"{self._output}/{VOLUMES}/{folder}/{key.volume_id}_qc"
        paths = {"quicklook": f"{self._output}/{QUICKLOOKS}/{folder}/{key.volume_id}.png"}
        if CFRADIAL2_OUT in self._formats:
            paths["netcdf"] = write_cfradial(qc, f"{base}.nc")
        if ODIM_OUT in self._formats:
            paths["odim_h5"] = write_odim(qc, f"{base}.h5", key.radar)
        title = (f"{key.radar} {key.volume_time:%Y-%m-%d %H:%M:%S} UTC - "
                 f"QC model {name} {version}")
        write_bytes(paths["quicklook"], quicklook_png(
            raw_lowest, qc[f"sweep_{lowest}"].ds, title))
        counts = [class_counts(c) for c in classes_by_sweep.values()]
        echo = sum(c["echo"] for c in counts)
        removed_share = (sum(c["fraction_removed"] * c["echo"] for c in counts) / echo
                         if echo else 0.0)
        beam.metrics.Metrics.counter(PIPELINE_NAME, "volumes_written").inc()
        return radar_rows.volume_row(key, paths, sweeps_in_volume, removed_share,
                                     self._model, self._context, sweeps_expected=expected)


def inference_dead_letters(failure, context: dict) -> list[dict]:
    """One dead letter per volume of a RunInference call that failed."""
    batch, error = failure
    error_class, message = failure_reason(error)
    return [radar_rows.volume_dead_letter(
        volume.first, "inference", f"{volume.first.volume_id}: sweeps not classified: "
                                   f"{error_class}: {message}",
        context, "InferenceFailed") for volume, _ in batch]


class ChunkPathFn(beam.DoFn):
    """Landing path -> (radar, path) for AssembleVolumes; a misnamed file -> dead letter."""

    def __init__(self, run_id: str):
        self._run_id = run_id

    def process(self, path: str):
        try:
            parse_chunk_name(path)
        except RadarReadError as error:
            yield beam.pvalue.TaggedOutput(DEAD_LETTERS, dead_letter(
                pipeline=PIPELINE_NAME, stage="assemble", error=error, raw=None, origin=path,
                run_id=self._run_id))
            return
        yield os.path.basename(os.path.dirname(path)), path
