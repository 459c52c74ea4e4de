"""Radar QC: NEXRAD Level II volumes through a UNet that removes non-meteorological echoes.

Each volume is decoded (xradar), every dual-pol sweep goes through RunInference on the model
grid, the per-gate classes are mapped back to the volume's own gates, and the QC'd volume is
written as CF/Radial 2 NetCDF with a PNG quicklook.

Usage::

    # batch (and backfills): archive files, plain, .gz or .bz2
    python -m pipelines.radar_qc --input '../shared/data/radar/KLBB*' --output out \\
        --registry registry

    # streaming: a landing directory of real-time chunks, <chunk_dir>/<RADAR>/<chunk name>
    python -m pipelines.radar_qc --streaming --chunk_dir landing_chunks --output out \\
        --stop_after_secs 120

Outputs under ``--output``: ``volumes/radar=<R>/dt=<D>/<volume id>_qc.nc`` (QC'd volume),
``quicklooks/radar=<R>/dt=<D>/<volume id>.png``, ``qc_volumes/`` (Parquet index, one row per
volume written), ``predictions/`` (sampled sweeps, bit-packed masks) and ``dead_letters/``
(every volume or chunk set that was not written, with the stage and the reason).

Notes:
    A volume is decoded twice: once to feed the model its sweeps, once when the QC'd volume is
    written. Only the per-gate classes (1.3 MB a sweep) travel through the shuffle that
    regroups a volume's sweeps; holding the decoded moments there instead would cost ~300 MB
    per volume in the runner's state, for ~1.5 s of decoding saved.
"""

import datetime
import logging
import os

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.ml.inference.base import RunInference
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from models import registry as model_registry
from models.provenance import code_version
from models.radar_qc.handler import DEFAULT_MAX_BATCH_SIZE, radar_model_handler
from pipelines.options import CommonOptions, build_and_run, resolve_common
from transforms import radar_rows
from transforms.chunk_assembly import AssembleVolumes
from transforms.dead_letters import DEAD_LETTERS, WriteDeadLetters, dead_letter
from transforms.file_sources import WatchNewFiles
from transforms.parquet_sink import WritePartitionedParquet, file_windows, utc_date
from transforms.predictions import WriteSampledPredictions
from transforms.quicklook import quicklook_png, write_bytes
from transforms.radar_io import RadarReadError, open_volume, parse_chunk_name
from transforms.radar_volumes import apply_qc, class_counts, keyed_sweeps, write_cfradial

LOGGER = logging.getLogger(__name__)
PIPELINE_NAME = "radar_qc"
VOLUMES, QUICKLOOKS, INDEX = "volumes", "quicklooks", "qc_volumes"


class RadarQcOptions(PipelineOptions):
    """Options of the radar QC pipeline."""

    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_argument("--chunk_dir", default=None,
                            help="streaming: landing directory of real-time chunks, laid out "
                                 "<chunk_dir>/<RADAR>/<YYYYMMDD-HHMMSS-NNN-T>")
        parser.add_argument("--chunk_timeout_secs", type=float, default=900.0,
                            help="a volume still missing chunks this long after its first "
                                 "chunk goes to dead letters")


def validate(options: PipelineOptions) -> tuple[CommonOptions, RadarQcOptions]:
    """Resolve and cross-check options once, with messages that name the flags.

    Raises:
        ValueError: no source or both, a source that does not fit the mode, a bad batch size.
    """
    common = resolve_common(options)
    radar = options.view_as(RadarQcOptions)
    streaming = options.view_as(StandardOptions).streaming
    common.model_name = common.model_name or "radar_qc"
    if common.max_batch_size is None:
        common.max_batch_size = DEFAULT_MAX_BATCH_SIZE
    if common.input and radar.chunk_dir:
        raise ValueError("give one source, not both --input and --chunk_dir")
    if radar.chunk_dir and not streaming:
        raise ValueError("--chunk_dir watches a landing directory and needs --streaming")
    if common.input and streaming:
        raise ValueError("--input is a batch source; use --chunk_dir with --streaming")
    if common.max_batch_size < 1:
        raise ValueError(f"--max_batch_size must be at least 1, got {common.max_batch_size}")
    return common, radar


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


class _ChunkPathFn(beam.DoFn):
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


def read_volumes(pipeline, radar: RadarQcOptions, common: CommonOptions):
    """The configured source as volume sources (tuples of paths) plus source dead letters."""
    if common.input:
        sources = (pipeline
                   | "MatchVolumeFiles" >> fileio.MatchFiles(common.input)
                   | "VolumePath" >> beam.Map(lambda metadata: (metadata.path,)))
        return sources, []
    if radar.chunk_dir:
        named = (pipeline
                 | "WatchChunkDir" >> WatchNewFiles(os.path.join(radar.chunk_dir, "*", "*"),
                                                    common.poll_secs, common.stop_after_secs)
                 | "ChunkRadar" >> beam.ParDo(_ChunkPathFn(common.run_id)).with_outputs(
                     DEAD_LETTERS, main="chunks"))
        assembled = named.chunks | "AssembleVolumes" >> AssembleVolumes(
            radar.chunk_timeout_secs, PIPELINE_NAME, common.run_id, wall_clock_guard=True)
        sources = assembled.volumes | "ChunkPaths" >> beam.MapTuple(
            lambda _, paths: tuple(paths))
        return sources, [named[DEAD_LETTERS], assembled[DEAD_LETTERS]]
    raise ValueError("no volume source: give --input or --chunk_dir")


def build(pipeline, options: PipelineOptions, sources=None) -> dict:
    """Wire the radar QC graph.

    Args:
        pipeline: the Pipeline to add to.
        options: all pipeline options.
        sources: optional PCollection of volume sources (tuples of paths: one archive file,
            or the ordered chunks of a volume) replacing the configured source.

    Returns:
        The PCollections: volumes (index rows), predictions (every sweep's row, before
        sampling), dead_letters, and the written file paths of each Parquet sink (``*_files``).
    """
    common, radar = validate(options)
    streaming = options.view_as(StandardOptions).streaming
    source_dead = []
    if sources is None:
        sources, source_dead = read_volumes(pipeline, radar, common)
    model = model_registry.resolve(common.registry, common.model_name, common.model_version)
    context = {
        "pipeline": PIPELINE_NAME, "run_mode": common.run_mode, "run_id": common.run_id,
        "code_version": code_version(),
        "models": {model.path: (model.name, model.version, model.sha256)},
    }
    window_secs = common.window_secs if streaming else 0
    output = common.output.rstrip("/")
    LOGGER.info("serving %s %s (%s)", model.name, model.version, model.path)

    if streaming:
        sources = sources | "WindowVolumes" >> file_windows(window_secs)
        source_dead = [dead | f"WindowSourceDeadLetters{i}" >> file_windows(window_secs)
                       for i, dead in enumerate(source_dead)]
    decoded = sources | "DecodeVolumes" >> beam.ParDo(DecodeVolumeFn(common.run_id)).with_outputs(
        DEAD_LETTERS, main="sweeps")
    handler = radar_model_handler(
        model.path, common.max_batch_size,
        (common.max_batch_duration_secs or None) if streaming else None)
    classified, failures = (decoded.sweeps
                            | "ClassifyGates" >> RunInference(handler).with_exception_handling())

    predictions = classified | "SweepRows" >> beam.MapTuple(
        lambda key, result: radar_rows.sweep_row(
            key, result.example, result.inference, result.model_id, context))
    # Grouped by volume and source: two copies of one volume (say .gz and plain) stay apart.
    masks = classified | "KeyMaskByVolume" >> beam.MapTuple(
        lambda key, result: ((key.volume_id, key.origin), (key, result.inference, None)))
    failed = failures.failed_inferences | "KeyFailureByVolume" >> beam.FlatMap(
        lambda failure: [((key.volume_id, key.origin),
                          (key, None, f"{type(failure[1]).__name__}: {failure[1]}"))
                         for key, _ in failure[0]])
    written = (
        (masks, failed)
        | "AllSweepOutcomes" >> beam.Flatten()
        | "CollectVolumeSweeps" >> beam.GroupByKey()
        | "WriteQcVolumes" >> beam.ParDo(WriteQcVolumeFn(
            output, (model.name, model.version, model.sha256), context)).with_outputs(
            DEAD_LETTERS, main="volumes"))
    dead_letters = ((*source_dead, decoded[DEAD_LETTERS], written[DEAD_LETTERS])
                    | "AllDeadLetters" >> beam.Flatten())
    return {
        "volumes": written.volumes,
        "predictions": predictions,
        "dead_letters": dead_letters,
        "volumes_files": written.volumes | "WriteVolumeIndex" >> WritePartitionedParquet(
            base=f"{output}/{INDEX}", schema=radar_rows.VOLUME_SCHEMA,
            partition_columns=radar_rows.VOLUME_PARTITIONS, file_prefix=common.run_id,
            sort_field="volume_id", num_shards=common.num_shards, window_secs=window_secs),
        "predictions_files": predictions | "WritePredictions" >> WriteSampledPredictions(
            output, radar_rows.PREDICTION_SCHEMA, common.sample_rate, common.run_id,
            window_secs, common.num_shards),
        "dead_letters_files": dead_letters | "WriteDeadLetters" >> WriteDeadLetters(
            output, common.run_id, window_secs),
    }


def run(argv=None, test_pipeline=None):
    """Parse options, build, run to the end and print where the outputs went.

    Args:
        argv: command-line arguments (default: sys.argv).
        test_pipeline: a TestPipeline to build into instead of a new Pipeline.

    Returns:
        The finished PipelineResult.
    """
    started = datetime.datetime.now(datetime.UTC)
    result, options = build_and_run(argv, test_pipeline, __doc__.split("\n")[0],
                                    RadarQcOptions, build)
    common = options.view_as(CommonOptions)
    out = common.output.rstrip("/")
    seconds = (datetime.datetime.now(datetime.UTC) - started).total_seconds()
    print(f"radar_qc run {common.run_id}: {result.state} in {seconds:.1f} s\n"
          f"  QC'd volumes: {out}/{VOLUMES}/   (CF/Radial 2 NetCDF)\n"
          f"  quicklooks:   {out}/{QUICKLOOKS}/\n"
          f"  volume index: {out}/{INDEX}/\n"
          f"  predictions:  {out}/predictions/pipeline={PIPELINE_NAME}/\n"
          f"  dead letters: {out}/{DEAD_LETTERS}/pipeline={PIPELINE_NAME}/")
    return result


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    run()
