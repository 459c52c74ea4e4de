"""Every pipeline's options (PipelineOptions classes), and the checks across them.

One module for all of them: Beam refuses a flag defined in two classes once both are imported,
and ``--help`` of a pipeline is built from here without importing the pipeline itself (its
graph pulls TensorFlow, ONNX Runtime, xradar: seconds before the first line of help).
"""

import argparse
import dataclasses
import logging
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from models.exit_codes import RETRAIN, epilog
from models.provenance import code_version, new_run_id
from models.radar_qc.engine import ENGINES
from models.registry import PRODUCTION
from transforms.common.parquet_sink import DEFAULT_MAX_ROWS_PER_FILE
from transforms.credit.dedup import DEFAULT_BUCKETS, DEFAULT_HORIZON_SECS
from transforms.credit.requests import DEFAULT_MAX_REQUEST_BYTES
from transforms.evaluation.join import WINDOWS
from transforms.radar.volumes import CFRADIAL2_OUT, OUTPUT_FORMATS

LOGGER = logging.getLogger(__name__)
RUN_MODES = ("batch", "streaming", "backfill")
BACKFILLS = "backfills"
DEFAULT_SINGLE_POL_MODEL = "radar_qc_single"
# The pipelines the evaluation reads (the keys of pipelines.capabilities.CAPABILITIES, which a
# test holds equal: the capabilities import every metric and replay, too slow for --help).
EVALUATED_PIPELINES = ("credit_scoring", "radar_qc")


class CommonOptions(PipelineOptions):
    """Where models come from, where outputs go, and what every output row records."""

    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_argument("--input", default=None,
                            help="batch: glob of input files (credit_scoring: JSON Lines "
                                 "requests; radar_qc: Level II archives, plain, .gz or .bz2)")
        parser.add_argument("--poll_secs", type=float, default=1.0,
                            help="streaming from a directory: how often it is listed")
        parser.add_argument("--model_name", default=None,
                            help="model name in the registry (default: credit_german for "
                                 "credit_scoring, radar_qc for radar_qc); each credit data set "
                                 "is its own model")
        parser.add_argument("--max_batch_size", type=int, default=None,
                            help="largest batch handed to the model (default: 2048 credit "
                                 "requests; 1 radar sweep of ~21 MB per engine call, a volume "
                                 "per RunInference call)")
        parser.add_argument("--max_batch_duration_secs", type=int, default=0,
                            help="streaming: batch across bundles, none waiting longer than "
                                 "this (stateful batching; 0 = batch within a bundle)")
        parser.add_argument("--max_rows_per_file", type=int, default=DEFAULT_MAX_ROWS_PER_FILE,
                            help="a Parquet output file is closed and the next one started "
                                 "after this many rows (each bundle writes its own files, so "
                                 "a worker holds one row group per open file, never a whole "
                                 "partition)")
        parser.add_argument("--registry", default="registry",
                            help="model registry root (local folder or gs://)")
        parser.add_argument("--model_version", default="production",
                            help="model version to serve: an alias (production, shadow ...), "
                                 "a version such as v0003, or 'latest' = highest; an alias is "
                                 "resolved once, when the run starts")
        parser.add_argument("--output", default="out",
                            help="output root; predictions/, dead_letters/ and the pipeline's "
                                 "primary output go under it")
        parser.add_argument("--sample_rate", type=float, default=0.1,
                            help="share of predictions written to the sampled-prediction "
                                 "Parquet (kept iff hash(prediction_id) < rate)")
        parser.add_argument("--run_id", default=None,
                            help="id of this run (default: <mode>-<UTC time>-<random>)")
        parser.add_argument("--run_mode", default=None, choices=RUN_MODES,
                            help="recorded on every row; default streaming if --streaming "
                                 "else batch. backfill: needs --run_id and a pinned "
                                 "--model_version; writes to <output>/backfills/<run_id>/, "
                                 "replacing what an earlier run of it wrote")
        parser.add_argument("--window_secs", type=int, default=10,
                            help="streaming only: length of the fixed windows in which "
                                 "output files are written")
        parser.add_argument("--stop_after_secs", type=float, default=0,
                            help="streaming from a directory only: stop watching after this "
                                 "many seconds and drain (demos, tests); 0 = run forever")


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """One run's configuration: parsed and checked once (``resolve_run``), completed by the
    pipeline's launch step (model versions resolved and their files hashed, rules archived)
    before the graph is built, and then only read. Nothing writes into it, nor into the
    options after parsing (Beam's runners may still rewrite their own).

    The common flags keep their names; a pipeline's own flags are read with ``view``.

    Attributes:
        pipeline: the pipeline's name, recorded on every row.
        run_id: minted here unless given (``models.provenance.new_run_id``).
        run_mode: batch, streaming or backfill.
        output: the run's output root (a backfill's own ``<output>/backfills/<run id>``).
        model_name: the flag, or the pipeline's default model.
        model_version: as asked (an alias is resolved at launch, into ``models``).
        max_batch_size: the flag, or the pipeline's default.
        window_secs: the file windows of a streaming run; 0 in batch.
        models: role -> the resolved ModelRef (``served``, ``shadow``, ``single_pol`` ...),
            set by the launch step.
        setup: what the launch step prepared besides (credit: ``CreditSetup``).
        launch_notes: what the launch step did, for the run's summary.
    """

    pipeline: str
    run_id: str
    run_mode: str
    streaming: bool
    runner: str
    output: str
    registry: str
    model_name: str
    model_version: str
    input: str | None
    sample_rate: float
    window_secs: int
    max_rows_per_file: int
    max_batch_size: int | None
    max_batch_duration_secs: int
    poll_secs: float
    stop_after_secs: float
    options: PipelineOptions = dataclasses.field(repr=False, compare=False)
    models: Mapping[str, Any] = dataclasses.field(default_factory=lambda: MappingProxyType({}))
    setup: Any = None
    launch_notes: tuple[str, ...] = ()

    def view(self, option_class):
        """The pipeline's own flags, as parsed (read them; never write them)."""
        return self.options.view_as(option_class)

    def launched(self, models: Mapping[str, Any], notes: Sequence[str], setup: Any = None
                 ) -> "RunConfig":
        """A copy completed by the launch step."""
        return dataclasses.replace(self, models=MappingProxyType(dict(models)), setup=setup,
                                   launch_notes=(*self.launch_notes, *notes))

    def row_context(self) -> dict:
        """What every output row records of its run: pipeline, run mode, run id, code version
        and each served model's (name, version, sha256) by its path."""
        return {"pipeline": self.pipeline, "run_mode": self.run_mode, "run_id": self.run_id,
                "code_version": code_version(),
                "models": {m.path: (m.name, m.version, m.sha256) for m in self.models.values()}}


def resolve_run(options: PipelineOptions, pipeline: str, default_model: str | None,
                default_batch_size: int | None = None, run_id_prefix: str | None = None
                ) -> RunConfig:
    """Check the rules that span the common options and resolve their defaults, once.

    Args:
        options: the parsed options (left as they are).
        pipeline: the pipeline's name.
        default_model: the model when ``--model_name`` is not given.
        default_batch_size: ``--max_batch_size`` when not given.
        run_id_prefix: the minted run id's prefix (default: the run mode).

    Raises:
        ValueError: with a message that names the options in conflict.
    """
    common = options.view_as(CommonOptions)
    standard = options.view_as(StandardOptions)
    streaming = bool(standard.streaming)
    if not 0.0 <= common.sample_rate <= 1.0:
        raise ValueError(f"--sample_rate must lie in [0, 1], got {common.sample_rate}")
    run_mode = common.run_mode or ("streaming" if streaming else "batch")
    if run_mode == "streaming" and not streaming:
        raise ValueError("--run_mode streaming needs --streaming")
    if run_mode == "backfill" and streaming:
        raise ValueError("--run_mode backfill is a batch run; drop --streaming")
    if streaming and common.window_secs <= 0:
        raise ValueError("--window_secs must be positive in streaming")
    output = common.output
    if run_mode == "backfill":
        if common.run_id is None:
            raise ValueError("a backfill needs --run_id, a stable name such as "
                             "backfill-2026-09-credit-v0003: re-running it replaces its output")
        if common.model_version == "latest":
            raise ValueError("a backfill needs a pinned --model_version (a version such as "
                             "v0003, or an alias, resolved once at start), not latest")
        suffix = f"/{BACKFILLS}/{common.run_id}"
        if not output.rstrip("/").endswith(suffix):
            output = output.rstrip("/") + suffix
    max_batch_size = default_batch_size if common.max_batch_size is None \
        else common.max_batch_size
    if max_batch_size is not None and max_batch_size < 1:
        raise ValueError(f"--max_batch_size must be at least 1, got {max_batch_size}")
    return RunConfig(
        pipeline=pipeline, run_id=common.run_id or new_run_id(run_id_prefix or run_mode),
        run_mode=run_mode, streaming=streaming, runner=str(standard.runner or "DirectRunner"),
        output=output, registry=common.registry,
        model_name=common.model_name or default_model, model_version=common.model_version,
        input=common.input, sample_rate=common.sample_rate,
        window_secs=common.window_secs if streaming else 0,
        max_rows_per_file=common.max_rows_per_file, max_batch_size=max_batch_size,
        max_batch_duration_secs=common.max_batch_duration_secs, poll_secs=common.poll_secs,
        stop_after_secs=common.stop_after_secs, options=options)


def check_sources(options: PipelineOptions, batch: dict, streaming: dict) -> str | None:
    """Exactly one source at most, and one that fits the mode.

    Args:
        options: all pipeline options.
        batch: flag name -> value of the batch sources.
        streaming: flag name -> value of the streaming sources.

    Returns:
        The flag name of the source given, or None.

    Raises:
        ValueError: several sources, or a source of the other mode.
    """
    given = [name for name, value in {**batch, **streaming}.items() if value]
    if len(given) > 1:
        raise ValueError(f"give one source, not {', '.join('--' + s for s in given)}")
    if not given:
        return None
    is_streaming = options.view_as(StandardOptions).streaming
    if given[0] in streaming and not is_streaming:
        raise ValueError(f"--{given[0]} is a streaming source and needs --streaming")
    if given[0] in batch and is_streaming:
        raise ValueError(f"--{given[0]} is a batch source; use "
                         f"{' or '.join('--' + s for s in streaming)} with --streaming")
    return given[0]


class CreditScoringOptions(PipelineOptions):
    """Options of the credit offers pipeline."""

    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_argument("--input_dir", default=None,
                            help="streaming: landing directory watched for new *.jsonl files")
        parser.add_argument("--input_topic", default=None,
                            help="streaming: Pub/Sub topic of requests (one JSON per message)")
        parser.add_argument("--pubsub_id_attribute", default=None,
                            help="Dataflow: the message attribute holding the request id, so "
                                 "Pub/Sub redeliveries are dropped at the source (id_label)")
        parser.add_argument("--rules", default=None,
                            help="offer rules file (decision thresholds, bank limits; default "
                                 "<config>/offer_rules/<model name>.json)")
        parser.add_argument("--offer_url", default=None,
                            help="base URL of the banks' offer API; without it approved "
                                 "requests get no offer (offer_status not_requested)")
        parser.add_argument("--offer_timeout_secs", type=float, default=2.0,
                            help="timeout of one offer API call")
        parser.add_argument("--offer_retries", type=int, default=3,
                            help="retries of a transient offer API failure (backoff doubles)")
        parser.add_argument("--offer_batch_size", type=int, default=50,
                            help="most quote requests per offer API call")
        parser.add_argument("--max_request_bytes", type=int, default=DEFAULT_MAX_REQUEST_BYTES,
                            help="longer request lines go to dead letters")
        parser.add_argument("--earliest_event_time", default="1990-01-01",
                            help="requests with an earlier event_time are dead letters (a "
                                 "backfill of older requests gives an earlier date); later "
                                 "than a day after reading is refused too")
        parser.add_argument("--min_batch_size", type=int, default=64,
                            help="smallest batch of requests parsed and scored together")
        parser.add_argument("--no_dedup", action="store_true",
                            help="skip deduplication by request_id (a backfill of requests "
                                 "deduplicated when first scored: saves a shuffle)")
        parser.add_argument("--dedup_horizon_secs", type=float, default=DEFAULT_HORIZON_SECS,
                            help="streaming: how long a request_id is remembered (event time)")
        parser.add_argument("--dedup_buckets", type=int, default=DEFAULT_BUCKETS,
                            help="batch: groups the deduplication shuffle spreads ids over")
        parser.add_argument("--model_endpoint", default=None,
                            help="base URL of the serving function (services.model_server, "
                                 "TF Serving REST): score there instead of in the worker")
        parser.add_argument("--model_endpoint_token", default=None,
                            help="bearer token for --model_endpoint")
        parser.add_argument("--model_endpoint_retries", type=int, default=3,
                            help="retries of a call the serving function failed (5xx, 429, "
                                 "no answer), with backoff")
        parser.add_argument("--shadow_version", default=None,
                            help="a version or alias scored beside the one in service, its "
                                 "answers written to the sampled predictions only (default: "
                                 "the registry's shadow alias when set, none in a backfill; "
                                 "none = no shadow)")
        parser.add_argument("--alias_poll_secs", type=float, default=60.0,
                            help="streaming with an alias as --model_version: how often the "
                                 "alias is read, so a promotion or rollback reaches the running "
                                 "pipeline without a restart (0 = keep the version resolved at "
                                 "start)")


class RadarQcOptions(PipelineOptions):
    """Options of the radar QC pipeline."""

    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_argument("--chunk_dir", default=None,
                            help="streaming: landing directory of real-time chunks, laid out "
                                 "<chunk_dir>/<RADAR>/<YYYYMMDD-HHMMSS-NNN-T>")
        parser.add_argument("--engine", default="auto", choices=ENGINES,
                            help="what runs the UNet: onnx (ONNX Runtime, CPU; the version's "
                                 "export), tensorflow (GPU, or versions without the export), "
                                 "auto = onnx when the version has the export")
        parser.add_argument("--output_formats", default=CFRADIAL2_OUT,
                            help=f"comma-separated formats of the QC'd volumes: "
                                 f"{', '.join(OUTPUT_FORMATS)} (CF/Radial 2 NetCDF, "
                                 f"CF/Radial 1.4 NetCDF, ODIM_H5)")
        parser.add_argument("--single_pol_model", default=DEFAULT_SINGLE_POL_MODEL,
                            help="registered model for sweeps without dual-pol moments "
                                 "(legacy NEXRAD, single-pol radars); 'none' sends volumes "
                                 "without any dual-pol sweep to dead letters. Used when "
                                 "registered")
        parser.add_argument("--single_pol_version", default="production",
                            help="its version or alias (pinned in a backfill, like "
                                 "--model_version)")
        parser.add_argument("--chunk_timeout_secs", type=float, default=900.0,
                            help="a volume still missing chunks this long after its first "
                                 "chunk goes to dead letters")
        parser.add_argument("--check_uncertainty", action="store_true",
                            help="run the reference algorithms (wradlib's fuzzy "
                                 "classification, the RHOHV rule) on every dual-pol sweep "
                                 "and flag a volume 'QC uncertain' where the UNet's call "
                                 "differs from both on more than qc_uncertain_share of its "
                                 "echo (<config>/evaluation/radar_reference.json); about "
                                 "0.6-1.5 s more per sweep")


class EvaluateOptions(PipelineOptions):
    """Options of the evaluation job (with --registry, --output, --run_id, --model_name from
    CommonOptions)."""

    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_argument("--pipeline", dest="evaluated_pipeline", default="credit_scoring",
                            choices=EVALUATED_PIPELINES, help="whose predictions to evaluate")
        parser.add_argument("--predictions", default="out",
                            help="output root of the evaluated pipeline (holding predictions/)")
        parser.add_argument("--truth", default=None,
                            help="glob of ground-truth files (.parquet, .csv, .jsonl): "
                                 "prediction_id, label (or mask_packed + mask_shape), label_time; "
                                 "optional for radar_qc (then watched without truth only)")
        parser.add_argument("--model_versions", default=None,
                            help="comma-separated model versions to evaluate (default: all)")
        parser.add_argument("--dt_from", default=None, help="first event date, YYYY-MM-DD")
        parser.add_argument("--dt_to", default=None, help="last event date, YYYY-MM-DD")
        parser.add_argument("--window", default=None, choices=WINDOWS,
                            help="time windows besides the whole period (default: config's)")
        parser.add_argument("--config", default=None,
                            help="evaluation config: slices, drift limits (default: "
                                 "<config>/evaluation/<model name>.json)")
        parser.add_argument("--retraining_rules", default=None,
                            help="retraining rules (default: "
                                 "<config>/retraining/<model name>.json)")
        parser.add_argument("--decide", action="store_true", default=False,
                            help="apply the retraining rules, write a decision record and "
                                 f"exit {RETRAIN} if retraining is due")
        parser.add_argument("--no_snapshot", action="store_true", default=False,
                            help="do not keep the labelled rows as a training snapshot in the "
                                 "registry (credit; kept by default)")
        parser.add_argument("--snapshot_id", default=None,
                            help="name of the training snapshot written (default "
                                 "snap-<run id>)")
        parser.add_argument("--now", default=None,
                            help="decision time, ISO-8601 (default: now; schedules use it)")


class CompareOptions(PipelineOptions):
    """Options of the comparison job (with --registry and --model_name from CommonOptions)."""

    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_argument("--challenger", default=None, help="the new version, e.g. v0002")
        parser.add_argument("--champion", default=PRODUCTION,
                            help="the version in service: an alias or a version")
        parser.add_argument("--snapshots", default=None,
                            help="comma-separated snapshots holding the window's labels "
                                 "(default: all of the model's)")
        parser.add_argument("--promotion_rules", default=None,
                            help="promotion rules (default <config>/promotion/<model>.json)")
        parser.add_argument("--promote", action="store_true", default=False,
                            help="move the champion's alias to an accepted challenger")
        parser.add_argument("--shadow_evidence", default=None,
                            help="output root of credit scoring runs where the challenger was "
                                 "the shadow: judge on those live rows (needs --shadow_truth)")
        parser.add_argument("--shadow_truth", default=None,
                            help="with --shadow_evidence: glob of the late labels (as "
                                 "pipelines.evaluate --truth reads them)")


class ReferenceOptions(PipelineOptions):
    """Options of the radar reference comparison."""

    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_argument("--chunk_volumes", default=None,
                            help="comma-separated folders, each holding the real-time chunks "
                                 "of one volume")
        parser.add_argument("--reference_config", default=None,
                            help="the references' settings (default "
                                 "<config>/evaluation/radar_reference.json)")


# Each runnable pipeline's own options (CommonOptions comes with every one).
PIPELINE_OPTIONS = {
    "credit_scoring": (CreditScoringOptions,),
    "radar_qc": (RadarQcOptions,),
    "evaluate": (EvaluateOptions,),
    "compare": (CompareOptions,),
    "radar_reference": (ReferenceOptions,),
}


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter,
                     argparse.RawDescriptionHelpFormatter):
    """Defaults shown; the epilog's table kept as written."""


def help_parser(pipeline: str, description: str, prog: str | None = None
                ) -> argparse.ArgumentParser:
    """The parser ``--help`` prints for a pipeline: its own options and the common ones (not
    Beam's hundreds), and the exit-code table."""
    parser = argparse.ArgumentParser(
        prog=prog, description=description, formatter_class=_HelpFormatter,
        epilog="Any Beam pipeline option (--runner, --project, --temp_location, ...) is "
               "accepted too.\n\n" + epilog())
    for option_class in (*PIPELINE_OPTIONS[pipeline], CommonOptions):
        option_class._add_argparse_args(parser.add_argument_group(option_class.__name__))
    return parser
