"""Radar QC: NEXRAD Level II volumes through a UNet that removes non-meteorological echoes.

Each volume is decoded (xradar, any format ``transforms.radar.formats`` detects), every
dual-pol sweep goes through RunInference with the dual-polarization model and every sweep with
reflectivity alone (legacy NEXRAD, single-pol radars) through a second RunInference with the
single-polarization model, on the model grid; the per-gate classes are mapped back to the
volume's own gates, and the QC'd volume is written as CF/Radial 2 NetCDF (and ODIM_H5 if
asked) with a PNG quicklook.

Usage::

    # batch (and backfills): archive files, plain, .gz or .bz2
    python -m pipelines.radar_qc --input '../shared/data/radar/KLBB*' --output out \\
        --registry registry

    # streaming: a landing directory of real-time chunks, <chunk_dir>/<RADAR>/<chunk name>
    python -m pipelines.radar_qc --streaming --chunk_dir landing_chunks --output out \\
        --stop_after_secs 120

Outputs under ``--output``: ``volumes/radar=<R>/dt=<D>/<volume id>_qc.nc`` (QC'd volume),
``sweeps/radar=<R>/dt=<D>/<volume id>-s<NN>_qc.nc`` (streaming chunks only: each dual-pol
sweep QC'd as soon as its chunks are there, before its volume ends),
``quicklooks/radar=<R>/dt=<D>/<volume id>.png``, ``qc_volumes/`` (Parquet index, one row per
volume written), ``predictions/`` (sampled sweeps, bit-packed masks) and ``dead_letters/``
(every volume or chunk set that was not written, with the stage and the reason).

Notes:
    A volume is one element from decoding to writing (decoded once); both RunInference steps
    pass it along, each classifying its own model's sweeps.
"""

import logging
import os
import sys

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.io.filesystems import FileSystems
from apache_beam.ml.inference.base import RunInference
from apache_beam.options.pipeline_options import PipelineOptions

from models import registry as model_registry
from models.radar_qc.engine import choose_engine
from models.radar_qc.handler import DEFAULT_SWEEPS_PER_CALL, radar_model_handler
from pipelines.launch import cli, counter_total, pipeline_runner, run_outputs
from pipelines.options import (
    DEFAULT_SINGLE_POL_MODEL,
    RadarQcOptions,
    RunConfig,
    check_sources,
    resolve_run,
)
from transforms.common.dead_letters import DEAD_LETTERS
from transforms.common.file_sources import WatchNewFiles
from transforms.common.outputs import PrimaryDataset, write_run_outputs
from transforms.common.parquet_sink import file_windows
from transforms.radar import rows as radar_rows
from transforms.radar.chunk_assembly import SWEEPS, AssembleVolumes
from transforms.radar.dofns import (
    PIPELINE_NAME,
    PREDICTIONS,
    QUICKLOOKS,
    VOLUMES,
    VOLUMES_QC_UNCERTAIN,
    ChunkPathFn,
    DecodeSweepFn,
    DecodeVolumeFn,
    WriteQcSweepFn,
    WriteQcVolumeFn,
    inference_dead_letters,
    model_input,
    record_classes,
)
from transforms.radar.reading import DUAL_POL, SINGLE_POL
from transforms.radar.reference import load_parameters
from transforms.radar.volumes import OUTPUT_FORMATS

LOGGER = logging.getLogger(__name__)
DEFAULT_MODEL = "radar_qc"
INDEX = PrimaryDataset(
    name="qc_volumes", label="WriteVolumeIndex", schema=radar_rows.VOLUME_SCHEMA,
    partitions=radar_rows.VOLUME_PARTITIONS)


def output_formats(radar: RadarQcOptions) -> tuple[str, ...]:
    """The formats of ``--output_formats``, checked.

    Raises:
        ValueError: none, or one not written here.
    """
    chosen = tuple(f.strip() for f in radar.output_formats.split(",") if f.strip())
    unknown = sorted(set(chosen) - set(OUTPUT_FORMATS))
    if not chosen or unknown:
        raise ValueError(f"--output_formats takes {', '.join(OUTPUT_FORMATS)}; got "
                         f"{radar.output_formats!r}")
    return chosen


def resolve(options: PipelineOptions) -> RunConfig:
    """Check options once, with messages that name the flags (the options are not written).

    Raises:
        ValueError: no source or both, a source that does not fit the mode, a bad batch size.
    """
    config = resolve_run(options, PIPELINE_NAME, DEFAULT_MODEL,
                         default_batch_size=DEFAULT_SWEEPS_PER_CALL)
    radar = config.view(RadarQcOptions)
    check_sources(options, {"input": config.input}, {"chunk_dir": radar.chunk_dir})
    output_formats(radar)
    if config.run_mode == "backfill" and radar.single_pol_version == "latest":
        raise ValueError("a backfill needs a pinned --single_pol_version, not latest")
    return config


def prepare(options: PipelineOptions) -> RunConfig:
    """The launch step: checked options, then the served versions resolved and hashed (the
    dual-pol model, and the single-pol one when configured)."""
    config = resolve(options)
    model = model_registry.resolve(config.registry, config.model_name, config.model_version)
    single = resolve_single_pol(config.registry, config.view(RadarQcOptions))
    models = {DUAL_POL: model, **({SINGLE_POL: single} if single else {})}
    return config.launched(models, [f"{ref.resolved_note()}, for {role.replace('_', '-')} sweeps"
                                    for role, ref in models.items()])


def resolve_single_pol(registry: str, radar: RadarQcOptions):
    """The single-polarization model's ModelRef, or None when none is configured: 'none', or
    the default name with no version registered (the run says so in its log).

    Raises:
        RegistryError: a model named on purpose, or a version or alias, that is not there.
    """
    name = radar.single_pol_model
    if name.lower() == "none":
        return None
    if name == DEFAULT_SINGLE_POL_MODEL and not model_registry.list_versions(registry, name):
        LOGGER.warning("no single-polarization model (%s) in %s: volumes without dual-pol "
                       "sweeps go to dead letters (train one with python -m "
                       "models.radar_qc.train --polarization single)", name, registry)
        return None
    return model_registry.resolve(registry, name, radar.single_pol_version)


def read_volumes(pipeline, config: RunConfig):
    """The configured source as volume sources (tuples of paths), source dead letters, and
    for real-time chunks the sweeps complete before their volume (else None)."""
    radar = config.view(RadarQcOptions)
    if config.input:
        sources = (pipeline
                   | "MatchVolumeFiles" >> fileio.MatchFiles(config.input)
                   | "VolumePath" >> beam.Map(lambda metadata: (metadata.path,)))
        return sources, [], None
    if radar.chunk_dir:
        named = (pipeline
                 | "WatchChunkDir" >> WatchNewFiles(os.path.join(radar.chunk_dir, "*", "*"),
                                                    config.poll_secs, config.stop_after_secs)
                 | "ChunkRadar" >> beam.ParDo(ChunkPathFn(config.run_id)).with_outputs(
                     DEAD_LETTERS, main="chunks"))
        assembled = named.chunks | "AssembleVolumes" >> AssembleVolumes(
            radar.chunk_timeout_secs, PIPELINE_NAME, config.run_id, wall_clock_guard=True,
            emit_sweeps=True)
        sources = assembled.volumes | "ChunkPaths" >> beam.MapTuple(
            lambda _, paths: tuple(paths))
        return sources, [named[DEAD_LETTERS], assembled[DEAD_LETTERS]], assembled[SWEEPS]
    raise ValueError("no volume source: give --input or --chunk_dir")


def build(pipeline, config: RunConfig, sources=None) -> dict:
    """Wire the radar QC graph.

    Args:
        pipeline: the Pipeline to add to.
        config: the launched run configuration (``prepare``).
        sources: optional PCollection of volume sources (tuples of paths: one archive file,
            or the ordered chunks of a volume) replacing the configured source.

    Returns:
        The PCollections: volumes (index rows), predictions (every sweep's row, before
        sampling), dead_letters, and the written file paths of each Parquet sink (``*_files``).
    """
    radar, streaming = config.view(RadarQcOptions), config.streaming
    source_dead, sweeps = [], None
    if sources is None:
        sources, source_dead, sweeps = read_volumes(pipeline, config)
    models = dict(config.models)
    single = models.get(SINGLE_POL)
    context = config.row_context()
    outputs = run_outputs(config)
    window_secs, output = outputs.window_secs, outputs.output.rstrip("/")

    if streaming:
        sources = sources | "WindowVolumes" >> file_windows(window_secs)
        source_dead = [dead | f"WindowSourceDeadLetters{i}" >> file_windows(window_secs)
                       for i, dead in enumerate(source_dead)]
    # One element per volume from here on: decoded once, classified, written, dropped.
    decoded = sources | "DecodeVolumes" >> beam.ParDo(
        DecodeVolumeFn(config.run_id, single is not None)).with_outputs(
        DEAD_LETTERS, main="volumes")
    volumes, failed = decoded.volumes, []
    for role, ref in models.items():
        suffix = "" if role == DUAL_POL else "SinglePol"
        engine = choose_engine(radar.engine, ref.manifest)
        # A volume is a batch of one (model_input), split into bounded engine calls.
        handler = radar_model_handler(ref.path, ref.manifest, engine,
                                      config.max_batch_size).with_no_batching()
        LOGGER.info("serving %s %s (%s) on %s for %s sweeps", ref.name, ref.version, ref.path,
                    engine, role.replace("_", "-"))
        classified, failures = (
            volumes
            | f"StackSweeps{suffix}" >> beam.Map(model_input, role)
            | f"ClassifyGates{suffix}" >> RunInference(handler).with_exception_handling())
        failed.append(failures.failed_inferences | f"InferenceDeadLetters{suffix}"
                      >> beam.FlatMap(inference_dead_letters, context))
        volumes = classified | f"RecordClasses{suffix}" >> beam.Map(record_classes, role)
    early = (qc_sweeps_early(sweeps, models[DUAL_POL], radar, config, output)
             if sweeps is not None else None)
    total = count_inputs(config.input) if config.input else None
    # The references' settings and the share above which a volume is "QC uncertain".
    uncertainty = load_parameters()[0] if radar.check_uncertainty else None
    written = volumes | "WriteQcVolumes" >> beam.ParDo(WriteQcVolumeFn(
        output, context, total, list(output_formats(radar)), uncertainty)).with_outputs(
        DEAD_LETTERS, PREDICTIONS, main="volumes")
    predictions = written[PREDICTIONS]
    dead_letters = ((*source_dead, decoded[DEAD_LETTERS], *failed, written[DEAD_LETTERS])
                    | "AllDeadLetters" >> beam.Flatten())
    return {
        "volumes": written.volumes,
        **({"sweep_files": early} if early is not None else {}),
        "predictions": predictions,
        "dead_letters": dead_letters,
        **write_run_outputs(outputs, INDEX, written.volumes, predictions,
                            radar_rows.PREDICTION_SCHEMA, dead_letters),
    }


def qc_sweeps_early(sweeps, ref, radar: RadarQcOptions, config: RunConfig, output: str):
    """Each dual-pol sweep of a real-time volume QC'd as soon as its chunks are there, written
    as its own CF/Radial 2 file under ``sweeps/`` (``DecodeSweepFn``): the written paths.
    The volume path still QCs and records the whole volume when it closes."""
    handler = radar_model_handler(ref.path, ref.manifest, choose_engine(radar.engine,
                                                                          ref.manifest),
                                  config.max_batch_size).with_no_batching()
    classified, failures = (
        sweeps
        # Decoding and inference in a stage of their own, not fused with chunk assembly's:
        # its bundles stay short (see AssembleVolumes.expand for what slow ones did on Prism).
        | "SpreadSweepsEarly" >> beam.Reshuffle()
        | "DecodeSweepsEarly" >> beam.ParDo(DecodeSweepFn())
        | "StackSweepsEarly" >> beam.Map(model_input, DUAL_POL)
        | "ClassifyGatesEarly" >> RunInference(handler).with_exception_handling())
    _ = failures.failed_inferences | "CountEarlyFailures" >> beam.Map(_left_to_volume)
    return (classified
            | "RecordClassesEarly" >> beam.Map(record_classes, DUAL_POL)
            | "WriteQcSweeps" >> beam.ParDo(WriteQcSweepFn(output, config.row_context())))


def _left_to_volume(failure) -> None:
    beam.metrics.Metrics.counter(PIPELINE_NAME, "sweeps_left_to_volume").inc()
    LOGGER.warning("a sweep was not classified ahead of its volume (%s); its volume will be",
                   failure[1])


def count_inputs(pattern: str) -> int | None:
    """How many files the input glob matches now, for progress lines; None when the
    filesystem cannot be listed from here (a cloud bucket without its client)."""
    try:
        return len(FileSystems.match([pattern])[0].metadata_list)
    except (ValueError, OSError):  # BeamIOError is an OSError
        return None


def output_folders(config: RunConfig) -> dict:
    """Where a run's outputs go, for its closing summary."""
    out, model = config.output.rstrip("/"), f"model_name={config.model_name}"
    return {"QC'd volumes": f"{out}/{VOLUMES}/   (CF/Radial 2 _qc.nc; CF/Radial 1 "
                            f"_qc.cfradial1.nc and ODIM_H5 _qc.h5 if asked)",
            "quicklooks": f"{out}/{QUICKLOOKS}/", "volume index": f"{out}/{INDEX.name}/",
            "predictions": f"{out}/predictions/pipeline={PIPELINE_NAME}/   (model_name=<model> "
                           f"of each sweep)",
            "dead letters": f"{out}/{DEAD_LETTERS}/pipeline={PIPELINE_NAME}/{model}/"}


def summary_notes(result, config: RunConfig) -> list[str]:
    """The "QC uncertain" line of a run that checked it."""
    if not config.view(RadarQcOptions).check_uncertainty:
        return []
    flagged = counter_total(result, PIPELINE_NAME, VOLUMES_QC_UNCERTAIN)
    share = load_parameters()[0].uncertain_share
    if flagged is None:
        return [f"  QC uncertain: see qc_uncertain in {config.output.rstrip('/')}/"
                f"{INDEX.name}/ (this runner reports no counters)"]
    return [f"  QC uncertain: {flagged} volume(s) where the UNet's call differs from both "
            f"reference algorithms' on more than {share:.0%} of the echo (qc_uncertain, "
            f"qc_uncertain_share in the volume index)"]


run = pipeline_runner(__doc__, PIPELINE_NAME, prepare, build, output_folders, summary_notes)


def main(argv=None) -> int:
    """The command: run to the end; exit status 0 (errors raise, ``cli`` maps them)."""
    run(argv)
    return 0

if __name__ == "__main__":
    sys.exit(cli(main))
