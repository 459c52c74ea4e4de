"""Radar QC on real volumes against reference algorithms nobody here wrote: agreement tables and
a report, where no per-gate truth exists.

Each volume is decoded and classified as the QC pipeline does (same model, same RunInference),
then wradlib's fuzzy echo classification and the RHOHV rule run on the same gates
(``transforms.radar.reference``); every dual-pol sweep gives POD / FAR / CSI of each pair
(UNet vs the references' consensus, vs each reference, and the references against each other)
over all echo gates and per range band.

Usage::

    python -m pipelines.radar_reference --registry registry --output out \\
        --input '../shared/data/radar/KLBB*' --chunk_volumes ../shared/data/radar/nexrad_chunks_KLOT

Outputs under ``--output``: ``evaluation/reference_agreement/model_name=<m>/`` (Parquet, one row
per sweep x range band x pair) and ``evaluation/reports/radar_qc/<m>/reference-<run id>/``
(index.html with the tables and each volume's lowest sweep as UNet / fuzzy / RHOHV masks).
References' settings: ``<config>/evaluation/radar_reference.json``.
"""

import glob
import logging
import sys

import apache_beam as beam
from apache_beam.ml.inference.base import RunInference
from apache_beam.options.pipeline_options import PipelineOptions

from models import registry as model_registry
from models.radar_qc.engine import choose_engine
from models.radar_qc.handler import DEFAULT_SWEEPS_PER_CALL, radar_model_handler
from pipelines.launch import build_and_run, cli
from pipelines.options import ReferenceOptions, RunConfig, resolve_run
from transforms.common.dead_letters import DEAD_LETTERS, WriteDeadLetters
from transforms.common.parquet_sink import WritePartitionedParquet
from transforms.radar.dofns import DecodeVolumeFn, ReferenceAgreementFn, model_input, record_classes
from transforms.radar.reading import DUAL_POL, RadarReadError, volume_source
from transforms.radar.reference import load_parameters
from transforms.radar.reference_report import (
    AGREEMENT_SCHEMA,
    read_agreement,
    volume_table,
    write_reference_report,
)

LOGGER = logging.getLogger(__name__)
PIPELINE_NAME = "radar_reference"
AGREEMENT = "reference_agreement"


def sources(config: RunConfig) -> list[tuple[str, ...]]:
    """Archive files of ``--input`` and the chunk sets of ``--chunk_volumes``, as volume sources."""
    reference = config.view(ReferenceOptions)
    found = [(p,) for p in sorted(glob.glob(config.input))] if config.input else []
    try:
        found += [volume_source(folder.strip())
                  for folder in (reference.chunk_volumes or "").split(",") if folder.strip()]
    except RadarReadError as error:
        raise ValueError(f"--chunk_volumes: {error}") from None
    if not found:
        raise ValueError("no volumes: give --input (archive files) or --chunk_volumes")
    return found


def prepare(options: PipelineOptions) -> RunConfig:
    """The launch step: checked options, the model version resolved and hashed."""
    config = resolve_run(options, PIPELINE_NAME, "radar_qc")
    model = model_registry.resolve(config.registry, config.model_name, config.model_version)
    return config.launched({DUAL_POL: model}, [model.resolved_note()])


def build(pipeline, config: RunConfig) -> dict:
    """Wire the comparison: volumes -> decoded -> classified (RunInference, the QC pipeline's
    handler) -> agreement rows (Parquet) and dead letters (undecodable volumes, volumes in
    the model's weak labels)."""
    params, bands = load_parameters(config.view(ReferenceOptions).reference_config)
    model = config.models[DUAL_POL]
    handler = radar_model_handler(model.path, model.manifest, choose_engine("auto", model.manifest),
                                  DEFAULT_SWEEPS_PER_CALL).with_no_batching()
    volumes = (pipeline
               | "VolumeSources" >> beam.Create(sources(config))
               | "DecodeVolumes" >> beam.ParDo(DecodeVolumeFn(
                   config.run_id, pipeline=PIPELINE_NAME)).with_outputs(
                   DEAD_LETTERS, main="volumes"))
    classified = (volumes.volumes
                  | "StackSweeps" >> beam.Map(model_input, DUAL_POL)
                  | "ClassifyGates" >> RunInference(handler)
                  | "RecordClasses" >> beam.Map(record_classes, DUAL_POL))
    compared = classified | "CompareWithReferences" >> beam.ParDo(ReferenceAgreementFn(
        params, bands, (model.name, model.version), config.run_id, report_dir(config),
        model.manifest.get("weak_label_volumes", []))).with_outputs(DEAD_LETTERS, main="rows")
    rows = compared.rows
    dead_letters = ((volumes[DEAD_LETTERS], compared[DEAD_LETTERS])
                    | "AllDeadLetters" >> beam.Flatten())
    base = f"{config.output.rstrip('/')}/evaluation/{AGREEMENT}"
    return {
        "rows": rows,
        "files": rows | "WriteAgreement" >> WritePartitionedParquet(
            base=base, schema=AGREEMENT_SCHEMA, partition_columns=("model_name",),
            file_prefix=config.run_id, max_rows_per_file=config.max_rows_per_file),
        "dead_letters": dead_letters | "WriteDeadLetters" >> WriteDeadLetters(
            config.output, config.run_id, config.model_name),
    }


def report_dir(config: RunConfig) -> str:
    return (f"{config.output.rstrip('/')}/evaluation/reports/radar_qc/{config.model_name}/"
            f"reference-{config.run_id}")


def run(argv=None, test_pipeline=None) -> dict:
    """Run the job, then write the report from its rows; returns {"report", "rows"}."""
    result, config = build_and_run(argv, test_pipeline, PIPELINE_NAME,
                                   __doc__.split("\n")[0], prepare, build)
    rows = read_agreement(f"{config.output.rstrip('/')}/evaluation/{AGREEMENT}",
                          config.run_id)
    params, bands = load_parameters(
        config.view(ReferenceOptions).reference_config)
    # The version that scored, as the launch resolved it (an alias may have moved since).
    learnt_from = config.models[DUAL_POL].manifest.get("weak_label_volumes", [])
    report = write_reference_report(rows, report_dir(config), params, bands, learnt_from)
    print(f"{PIPELINE_NAME} run {config.run_id}: {result.state}\n"
          f"  agreement rows: {len(rows)} in {config.output.rstrip('/')}/evaluation/{AGREEMENT}/"
          f"\n  volumes not scored (undecodable, or in the model's weak labels): "
          f"{config.output.rstrip('/')}/{DEAD_LETTERS}/")
    def figure(value, form=".2f"):
        return "-" if value is None else format(value, form)

    for row in volume_table(rows):
        if row["pair"] == "UNet vs consensus":
            print(f"  {row['volume_id']}: UNet vs the references' consensus CSI "
                  f"{figure(row['csi'])} (POD {figure(row['pod'])}, FAR {figure(row['far'])}, "
                  f"HSS {figure(row['hss'])}); "
                  f"removes {figure(row['weather_removed_share'], '.1%')} of what both call "
                  f"weather")
    print(f"  report:  {report}")
    return {"report": report, "rows": rows}


def main(argv=None) -> int:
    """The command: run to the end; exit status 0 (errors raise, ``cli`` maps them)."""
    run(argv)
    return 0


if __name__ == "__main__":
    sys.exit(cli(main))
