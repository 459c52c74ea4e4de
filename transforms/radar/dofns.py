"""The radar QC pipeline's DoFns: decoding volumes, writing QC'd volumes, naming chunks.

Thin wrappers: the work is in ``reading``, ``volumes``, ``rows`` and ``quicklook``.
"""

import logging
import os

import apache_beam as beam

from models.radar_qc.vocabulary import class_counts
from transforms.common.dead_letters import DEAD_LETTERS, dead_letter
from transforms.common.parquet_sink import utc_date
from transforms.radar import rows as radar_rows
from transforms.radar.quicklook import quicklook_png, write_bytes
from transforms.radar.reading import RadarReadError, open_volume, parse_chunk_name
from transforms.radar.volumes import apply_qc, keyed_sweeps, write_cfradial

LOGGER = logging.getLogger(__name__)
PIPELINE_NAME = "radar_qc"
VOLUMES, QUICKLOOKS = "volumes", "quicklooks"


class DecodeVolumeFn(beam.DoFn):
    """Source (archive path, or ordered chunk paths) -> keyed sweeps; undecodable -> dead letter.

    Nothing of a bad file is copied into its dead letter: the origin names it.
    """

    def __init__(self, run_id: str):
        self._run_id = run_id

    def process(self, source: tuple[str, ...]):
        try:
            tree = open_volume(source[0] if len(source) == 1 else list(source))
            yield from keyed_sweeps(tree, source)
        except RadarReadError as error:
            beam.metrics.Metrics.counter(PIPELINE_NAME, "volumes_rejected").inc()
            yield beam.pvalue.TaggedOutput(DEAD_LETTERS, dead_letter(
                pipeline=PIPELINE_NAME, stage="decode", error=error, raw=None,
                origin=";".join(source), run_id=self._run_id))


class WriteQcVolumeFn(beam.DoFn):
    """((volume id, source), [(key, classes or None, error or None)]) -> index row, files.

    A volume with any sweep the model failed on is not written: it goes to dead letters
    (stage "inference") with the failing sweeps and errors; a failure while writing goes to
    dead letters with stage "write".
    """

    def __init__(self, output: str, model: tuple[str, str, str], context: dict):
        self._output = output
        self._model = model
        self._context = context

    def process(self, element):
        _, sweeps = element
        sweeps = sorted(sweeps, key=lambda s: s[0].sweep_number)
        key = sweeps[0][0]
        failed = [(k.sweep_number, error) for k, _, error in sweeps if error is not None]
        if failed or len(sweeps) != key.qc_sweeps:
            reason = (f"{key.volume_id}: sweeps not classified: "
                      + "; ".join(f"sweep {n}: {e}" for n, e in failed)
                      if failed else f"{key.volume_id}: {len(sweeps)} of {key.qc_sweeps} "
                                     "sweeps reached the writer")
            yield beam.pvalue.TaggedOutput(DEAD_LETTERS, radar_rows.volume_dead_letter(
                key, "inference", reason, self._context, "InferenceFailed"))
            return
        try:
            yield self._write(key, {k.sweep_number: classes for k, classes, _ in sweeps})
        except Exception as error:  # noqa: BLE001 - any write failure is this volume's alone
            LOGGER.exception("writing %s failed", key.volume_id)
            yield beam.pvalue.TaggedOutput(DEAD_LETTERS, radar_rows.volume_dead_letter(
                key, "write", error, self._context))

    def _write(self, key, classes_by_sweep: dict) -> dict:
        name, version, sha256 = self._model
        tree = open_volume(key.source[0] if len(key.source) == 1 else list(key.source))
        qc = apply_qc(tree, classes_by_sweep, {
            "qc_model_name": name, "qc_model_version": version, "qc_model_sha256": sha256,
            "qc_run_id": self._context["run_id"]})
        folder = f"radar={key.radar}/dt={utc_date(key.volume_time)}"
        paths = {
            "netcdf": write_cfradial(qc, f"{self._output}/{VOLUMES}/{folder}/"
                                         f"{key.volume_id}_qc.nc"),
            "quicklook": f"{self._output}/{QUICKLOOKS}/{folder}/{key.volume_id}.png",
        }
        lowest = min(classes_by_sweep, key=lambda n: (
            float(tree[f"sweep_{n}"].ds["sweep_fixed_angle"].values), n))
        title = (f"{key.radar} {key.volume_time:%Y-%m-%d %H:%M:%S} UTC - "
                 f"QC model {name} {version}")
        write_bytes(paths["quicklook"], quicklook_png(
            tree[f"sweep_{lowest}"].ds, qc[f"sweep_{lowest}"].ds, title))
        counts = [class_counts(c) for c in classes_by_sweep.values()]
        echo = sum(c["echo"] for c in counts)
        removed_share = (sum(c["fraction_removed"] * c["echo"] for c in counts) / echo
                         if echo else 0.0)
        beam.metrics.Metrics.counter(PIPELINE_NAME, "volumes_written").inc()
        return radar_rows.volume_row(key, paths, len(tree.children), removed_share,
                                     self._model, self._context)


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
