"""What every pipeline's ``run`` does around its graph: help, parse, build, check the output,
run to the end, print the summary; and the command wrapper with the exit-code table."""

import datetime
import logging
import sys

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from models.exit_codes import run_command
from pipelines.options import RunConfig, help_parser
from runners.prism import with_prism
from transforms.common.outputs import RunOutputs, is_output_failure, output_failure

LOGGER = logging.getLogger(__name__)


def run_outputs(config: RunConfig) -> RunOutputs:
    """Where a pipeline run writes, from its run configuration."""
    return RunOutputs(output=config.output, run_id=config.run_id,
                      model_name=config.model_name, sample_rate=config.sample_rate,
                      window_secs=config.window_secs,
                      max_rows_per_file=config.max_rows_per_file)


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


def clear_backfill_output(config: RunConfig) -> None:
    """A backfill owns ``<output>/backfills/<run id>/``: delete it before the run writes, so
    re-running the same backfill replaces its output instead of adding to it."""
    if config.run_mode == "backfill" and FileSystems.exists(config.output):
        FileSystems.delete([config.output])


def print_help_if_asked(argv, pipeline: str, description: str) -> None:
    """Print the options of this pipeline (not Beam's hundreds) and exit on -h / --help.

    Beam's PipelineOptions ignores --help, so without this a user would see nothing.
    """
    argv = sys.argv[1:] if argv is None else argv
    if "-h" in argv or "--help" in argv:
        help_parser(pipeline, description).print_help()
        sys.exit(0)


def pipeline_runner(description: str, name: str, prepare, build, outputs, notes=None):
    """The ``run`` function of a pipeline module.

    Args:
        description: the module docstring (its first line heads ``--help``).
        name: the pipeline's name (its options in ``pipelines.options.PIPELINE_OPTIONS``),
            heading the closing summary.
        prepare: ``prepare(options) -> RunConfig``: checks and the launch step.
        build: ``build(pipeline, config)`` wiring its graph.
        outputs: ``outputs(config) -> {label: path}`` for the summary.
        notes: optional ``notes(result, config) -> [line]``: the pipeline's own lines of the
            summary (after the counts).
    """

    def run(argv=None, test_pipeline=None):
        """Parse options, launch, build, run to the end and print where the outputs went.

        Args:
            argv: command-line arguments (default: sys.argv).
            test_pipeline: a TestPipeline to build into instead of a new Pipeline.

        Returns:
            The finished PipelineResult.
        """
        started = datetime.datetime.now(datetime.UTC)
        result, config = build_and_run(argv, test_pipeline, name, description.split("\n")[0],
                                       prepare, build)
        seconds = (datetime.datetime.now(datetime.UTC) - started).total_seconds()
        folders = outputs(config)
        width = max(len(label) for label in folders) + 2
        print("\n".join([f"{name} run {config.run_id}: {result.state} in {seconds:.1f} s"]
                        + [f"  {label + ':':<{width}}{path}" for label, path in folders.items()]
                        + counts_summary(result, seconds)
                        + (notes(result, config) if notes else [])))
        return result

    return run


def counter_total(result, namespace: str, name: str) -> int | None:
    """A Beam counter's total over the run (None when the runner reports no metrics)."""
    from apache_beam.metrics.metric import MetricsFilter

    try:
        counters = result.metrics().query(MetricsFilter().with_namespace(namespace)
                                          .with_name(name))["counters"]
    except Exception:  # noqa: BLE001 - a runner without metrics
        return None
    return sum(int((c.committed if c.committed is not None else c.attempted) or 0)
               for c in counters)


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


def build_and_run(argv, test_pipeline, name: str, description: str, prepare, build,
                  writes_output: bool = True):
    """What every pipeline's ``run`` does: help, parse, launch, build, run to the end.

    The launch step (``prepare``: options checked, model versions resolved and hashed, rules
    archived) comes before the graph is built, and says what it did; a backfill's own output
    folder is cleared after the graph is built and before anything is written.

    Returns:
        (the finished PipelineResult, the RunConfig).
    """
    print_help_if_asked(argv, name, description)
    argv, runner_note = with_prism(list(sys.argv[1:] if argv is None else argv))
    options = PipelineOptions(argv)
    config = prepare(options)
    if runner_note:
        print(f"{name} launch: {runner_note}", flush=True)
    for note in config.launch_notes:
        print(f"{name} launch: {note}", flush=True)
    pipeline = test_pipeline or beam.Pipeline(options=options)
    build(pipeline, config)
    if writes_output:  # (the comparison job writes to the registry only)
        check_output_writable(config.output, config.run_id)
    clear_backfill_output(config)
    try:
        result = pipeline.run()
        result.wait_until_finish()
    except Exception as error:
        if not is_output_failure(error):
            raise
        removed = remove_run_files(config.output, config.run_id)
        raise OutputUnavailable(
            f"writing under {config.output} failed: {output_failure(error)}; run "
            f"{config.run_id} stopped and the {removed} file(s) it had written were removed, so "
            f"running it again after freeing space does not double any row") from error
    return result, config


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
    """Run a pipeline's entry point as a command under the exit-code table
    (``models.exit_codes``): a configuration or option error (a missing model, a bad flag
    combination, an output that cannot be written) ends with one line on stderr and exit 2."""
    return run_command(main, argv)
