"""Options shared by every pipeline, and the checks across them."""

import argparse
import datetime
import logging
import sys
import uuid

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from transforms.common.outputs import RunOutputs, is_output_failure, output_failure
from transforms.common.parquet_sink import DEFAULT_MAX_ROWS_PER_FILE

LOGGER = logging.getLogger(__name__)
RUN_MODES = ("batch", "streaming", "backfill")
BACKFILLS = "backfills"


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


def resolve_common(options: PipelineOptions) -> CommonOptions:
    """Fill in run id and run mode, and check the rules that span options.

    Raises:
        ValueError: with a message that names the options in conflict.
    """
    common = options.view_as(CommonOptions)
    streaming = options.view_as(StandardOptions).streaming
    if not 0.0 <= common.sample_rate <= 1.0:
        raise ValueError(f"--sample_rate must lie in [0, 1], got {common.sample_rate}")
    if common.run_mode is None:
        common.run_mode = "streaming" if streaming else "batch"
    if common.run_mode == "streaming" and not streaming:
        raise ValueError("--run_mode streaming needs --streaming")
    if common.run_mode == "backfill" and streaming:
        raise ValueError("--run_mode backfill is a batch run; drop --streaming")
    if streaming and common.window_secs <= 0:
        raise ValueError("--window_secs must be positive in streaming")
    if common.run_mode == "backfill":
        if common.run_id is None:
            raise ValueError("a backfill needs --run_id, a stable name such as "
                             "backfill-2026-09-credit-v0003: re-running it replaces its output")
        if common.model_version == "latest":
            raise ValueError("a backfill needs a pinned --model_version (a version such as "
                             "v0003, or an alias, resolved once at start), not latest")
        suffix = f"/{BACKFILLS}/{common.run_id}"
        if not common.output.rstrip("/").endswith(suffix):
            common.output = common.output.rstrip("/") + suffix
    if common.run_id is None:
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
        common.run_id = f"{common.run_mode}-{stamp}-{uuid.uuid4().hex[:6]}"
    return common


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


def run_outputs(options: PipelineOptions) -> RunOutputs:
    """Where a pipeline run writes, from the resolved common options."""
    common = options.view_as(CommonOptions)
    streaming = options.view_as(StandardOptions).streaming
    return RunOutputs(output=common.output, run_id=common.run_id,
                      model_name=common.model_name, sample_rate=common.sample_rate,
                      window_secs=common.window_secs if streaming else 0,
                      max_rows_per_file=common.max_rows_per_file)


class OutputUnavailable(OSError):
    """The output folder cannot be written (read-only, missing rights, a full disk)."""


def check_output_writable(output: str, run_id: str) -> None:
    """Write and delete a small hidden file under the output root, so an output that cannot
    be written stops the run at start, before any input is read.

    Raises:
        OutputUnavailable: naming the folder and the operating system's reason.
    """
    probe = FileSystems.join(output, f".write-check-{run_id}")
    try:
        if not FileSystems.exists(output):
            FileSystems.mkdirs(output)
        with FileSystems.create(probe) as f:
            f.write(b"beamline write check\n")
        FileSystems.delete([probe])
    except Exception as error:  # noqa: BLE001 - every filesystem has its own error classes
        raise OutputUnavailable(f"output folder {output} cannot be written: "
                                f"{output_failure(error)}") from error


def clear_backfill_output(common: CommonOptions) -> None:
    """A backfill owns ``<output>/backfills/<run id>/``: delete it before the run writes, so
    re-running the same backfill replaces its output instead of adding to it."""
    if common.run_mode == "backfill" and FileSystems.exists(common.output):
        FileSystems.delete([common.output])


def print_help_if_asked(argv, description: str, *option_classes) -> None:
    """Print the options of this pipeline (not Beam's hundreds) and exit on -h / --help.

    Beam's PipelineOptions ignores --help, so without this a user would see nothing.
    """
    argv = sys.argv[1:] if argv is None else argv
    if "-h" not in argv and "--help" not in argv:
        return
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        epilog="Any Beam pipeline option (--runner, --project, --temp_location, ...) is "
               "accepted too.")
    for option_class in (*option_classes, CommonOptions):
        option_class._add_argparse_args(parser.add_argument_group(option_class.__name__))
    parser.print_help()
    sys.exit(0)


def pipeline_runner(description: str, option_class, build, name: str, outputs):
    """The ``run`` function of a pipeline module.

    Args:
        description: the module docstring (its first line heads ``--help``).
        option_class: the pipeline's own PipelineOptions.
        build: ``build(pipeline, options)`` wiring its graph.
        name: the pipeline's name, heading the closing summary.
        outputs: ``outputs(common options) -> {label: path}`` for the summary.
    """

    def run(argv=None, test_pipeline=None):
        """Parse options, build, run to the end and print where the outputs went.

        Args:
            argv: command-line arguments (default: sys.argv).
            test_pipeline: a TestPipeline to build into instead of a new Pipeline.

        Returns:
            The finished PipelineResult.
        """
        started = datetime.datetime.now(datetime.UTC)
        result, options = build_and_run(argv, test_pipeline, description.split("\n")[0],
                                        option_class, build)
        common = options.view_as(CommonOptions)
        seconds = (datetime.datetime.now(datetime.UTC) - started).total_seconds()
        folders = outputs(common)
        width = max(len(label) for label in folders) + 2
        print("\n".join([f"{name} run {common.run_id}: {result.state} in {seconds:.1f} s"]
                        + [f"  {label + ':':<{width}}{path}" for label, path in folders.items()]
                        + counts_summary(result, seconds)))
        return result

    return run


def counts_summary(result, seconds: float) -> list[str]:
    """Rows written per dataset and dead letters per stage, from the run's Beam counters
    (nothing when the runner does not report metrics)."""
    from apache_beam.metrics.metric import MetricsFilter

    from transforms.common.dead_letters import BY_STAGE, DEAD_LETTERS
    from transforms.common.parquet_sink import ROWS_WRITTEN

    try:
        counters = result.metrics().query(MetricsFilter())["counters"]
    except Exception:  # noqa: BLE001 - a runner without metrics gets no counts
        return []
    totals: dict[tuple[str, str], int] = {}
    for counter in counters:
        value = counter.committed if counter.committed is not None else counter.attempted
        key = (counter.key.metric.namespace, counter.key.metric.name)
        totals[key] = totals.get(key, 0) + int(value or 0)
    written = {name: n for (space, name), n in totals.items() if space == ROWS_WRITTEN}
    stages = {name: n for (space, name), n in totals.items() if space == BY_STAGE}
    if not written and not stages:
        return []
    primary = sum(n for name, n in written.items() if name not in ("predictions", DEAD_LETTERS))
    inputs = primary + sum(stages.values())
    lines = ["  rows written: " + ", ".join(f"{name} {n:,}" for name, n in sorted(
        written.items()))]
    lines.append("  dead letters: " + (", ".join(f"{stage} {n:,}" for stage, n in sorted(
        stages.items())) if stages else "none"))
    if seconds > 0 and inputs:
        rate = inputs / seconds
        lines.append(f"  {inputs:,} inputs ended in an output or a dead letter: "
                     f"{rate:,.0f} inputs/s" if rate >= 10 else
                     f"  {inputs:,} inputs ended in an output or a dead letter: "
                     f"{rate:.2f} inputs/s ({seconds / inputs:.1f} s each)")
    return lines


def build_and_run(argv, test_pipeline, description: str, option_class, build,
                  writes_output: bool = True):
    """What every pipeline's ``run`` does: help, parse, build, run to the end.

    A backfill's own output folder is cleared after the graph is built (options checked) and
    before anything is written.

    Returns:
        (the finished PipelineResult, the PipelineOptions).
    """
    print_help_if_asked(argv, description, option_class)
    options = PipelineOptions(argv)
    pipeline = test_pipeline or beam.Pipeline(options=options)
    build(pipeline, options)
    common = options.view_as(CommonOptions)
    if writes_output:  # (the comparison job writes to the registry only)
        check_output_writable(common.output, common.run_id)
    clear_backfill_output(common)
    try:
        result = pipeline.run()
        result.wait_until_finish()
    except Exception as error:
        if not is_output_failure(error):
            raise
        removed = remove_run_files(common.output, common.run_id)
        raise OutputUnavailable(
            f"writing under {common.output} failed: {output_failure(error)}; run "
            f"{common.run_id} stopped and the {removed} file(s) it had written were removed, so "
            f"running it again after freeing space does not double any row") from error
    return result, options


def remove_run_files(output: str, run_id: str) -> int:
    """Delete the files a failed run wrote under ``output``, finished or not (their names
    start with the run id, hidden ones with a dot before it); returns how many."""
    try:
        found = FileSystems.match([FileSystems.join(output, "**", f"{run_id}-*"),
                                   FileSystems.join(output, "**", f".{run_id}-*")])
        paths = [m.path for result in found for m in result.metadata_list]
        if paths:
            FileSystems.delete(paths)
        return len(paths)
    except Exception:  # noqa: BLE001 - the error being reported matters more
        LOGGER.warning("could not remove the finished files of run %s under %s", run_id, output)
        return 0


def cli(main, argv=None) -> int:
    """Run a pipeline's entry point as a command: a configuration or option error (a missing
    model, a bad flag combination, a configuration file that breaks its rules) ends with one
    line on stderr and exit status 2 instead of a traceback.

    Returns:
        The exit status: ``main``'s own when it returns an int (anything else counts as 0),
        or 2.
    """
    from models.registry import RegistryError

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        status = main(argv)
        return status if isinstance(status, int) else 0
    except (ValueError, RegistryError, OutputUnavailable) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
