"""``beamline``: one command, a subcommand per job, one exit-code table.

argparse (the standard library) rather than click or typer: every job already has its own
argparse parser or Beam PipelineOptions behind its ``python -m`` alias, which manifests record
and retraining rules repeat; this table dispatches to those same entry points, imported only
when their command runs, so ``beamline --help`` imports neither Beam nor TensorFlow. A
pipeline's ``--help`` is built from ``pipelines.options`` without importing its graph.
"""

import argparse
import dataclasses
import importlib
import os
import sys
import textwrap
from collections.abc import Sequence

from models.config import CONFIG_DIR_ENV
from models.exit_codes import REFUSED, epilog


@dataclasses.dataclass(frozen=True)
class Command:
    """One leaf of the command tree.

    Attributes:
        target: ``module:function`` taking argv and returning an exit status.
        summary: the line ``--help`` shows.
        pipeline: the pipeline name in ``pipelines.options.PIPELINE_OPTIONS`` whose help is
            built without importing the module (Beam pipelines only).
        alias: the ``python -m`` form of the same entry point, recorded in manifests.
    """

    target: str
    summary: str
    pipeline: str | None = None

    @property
    def alias(self) -> str:
        return "python -m " + self.target.split(":")[0]


COMMANDS: dict[str, dict[str, Command] | Command] = {
    "credit": {
        "train": Command("models.credit.train:main",
                         "train a credit model from a data set configuration and publish it"),
        "score": Command("pipelines.credit_scoring:main",
                         "score requests, decide, fetch offers (batch, streaming, backfill)",
                         pipeline="credit_scoring"),
        "compare": Command("beamline.compare:main",
                           "challenger against champion on the held-out window (in process; "
                           "--on_beam or --shadow_evidence: a Beam job), --promote if accepted"),
        "replay": Command("models.credit.replay:main",
                          "write a data set's rows as JSON Lines requests"),
        "scenarios": Command("models.credit.scenarios:main",
                             "weeks of requests and late truth, shifted by named scenarios"),
    },
    "radar": {
        "qc": Command("pipelines.radar_qc:main",
                      "QC radar volumes or real-time chunks with the UNet (batch, streaming)",
                      pipeline="radar_qc"),
        "train": Command("models.radar_qc.train:main",
                         "train a radar QC UNet on synthetic sweeps and publish it"),
        "weak-labels": Command("transforms.radar.weak_labels:main",
                               "train the dual-pol UNet on synthetic plus real volumes labelled "
                               "by the reference algorithms"),
        "leave-one-out": Command("transforms.radar.leave_one_radar_out:main",
                                 "train without each radar in turn and score the model on "
                                 "it against the reference algorithms (an experiment)"),
        "reference": Command("pipelines.radar_reference:main",
                             "compare the UNet with reference QC algorithms on real volumes",
                             pipeline="radar_reference"),
        "synthetic": Command("transforms.radar.synthetic_volumes:main",
                             "synthetic volumes with known truth, or a single-pol copy"),
        "feed": Command("services.chunk_feed:main",
                        "land a folder of real-time chunks one by one into a landing folder"),
    },
    "evaluate": Command("pipelines.evaluate:main",
                        "join sampled predictions with truth: metrics, slices, drift, report, "
                        "retraining decision (exit 3)", pipeline="evaluate"),
    "explain": Command("pipelines.explain:main",
                       "explain and replay sampled predictions bit-exact"),
    "models": {
        "status": Command("models.promotion:status_main", "versions, aliases, recent moves"),
        "page": Command("pipelines.operations:main",
                        "the operations page: runs, estimates, decisions and alias moves on one "
                        "time axis"),
        "promote": Command("models.promotion:promote_main",
                           "move an alias to a version (smoke-checked, audited)"),
        "rollback": Command("models.promotion:rollback_main",
                            "move an alias back to the version it replaced"),
        "verify": Command("models.promotion:verify_main",
                          "check every version's files and signature and the audit chain"),
        "sign": Command("models.promotion:sign_main",
                        "sign versions with the registry signing key (rotation)"),
        "keygen": Command("models.promotion:keygen_main",
                          "make a registry signing key pair (signatures are then required)"),
    },
    "serve": {
        "model": Command("services.model_server:main",
                         "the stateless serving function (TF Serving REST)"),
        "offers": Command("services.offers_api:main", "the interactive offers API"),
        "bank": Command("services.bank_offers:main", "a stand-in for the banks' offer API"),
    },
    "sql": {
        "render": Command("transforms.evaluation.query:main",
                          "render the evaluation query of a data set as SQL"),
    },
    "bench": {
        "credit": Command("bench.credit_throughput:main", "credit throughput, side by side"),
        "radar": Command("bench.radar_throughput:main", "radar throughput and memory"),
        "serving": Command("bench.serving:main", "serving latency and throughput"),
        "streaming": Command("bench.streaming_latency:main",
                             "streaming credit latency while the job runs, Prism beside the "
                             "DirectRunner"),
        "backfill-memory": Command("bench.backfill_memory:main",
                                   "peak memory of a backfill as rows double"),
    },
    "demo": Command("beamline.demo:main",
                    "the whole system on the shared data: train what is missing, run every "
                    "job, print where the outputs are"),
    "setup": Command("beamline.setup:main",
                     "set-up beyond the venv: the pseudonymisation key, checks of the data "
                     "folder and tools"),
}


DESCRIPTION = ("beamline: Apache Beam pipelines that invoke ML models (credit offers, radar QC), "
               "batch and streaming, and the loop that evaluates, retrains and promotes them.")


def _parser(prog: str, group: dict, description: str) -> argparse.ArgumentParser:
    lines = []
    for name, entry in group.items():
        text = entry.summary if isinstance(entry, Command) else " | ".join(entry)
        wrapped = textwrap.wrap(text, 80)
        lines += [f"  {name:<16}{wrapped[0]}", *(f"  {'':<16}{more}" for more in wrapped[1:])]
    parser = argparse.ArgumentParser(
        prog=prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter,
        usage=f"{prog} [--config_dir DIR] COMMAND [options]" if prog == "beamline"
        else f"{prog} COMMAND [options]",
        epilog="commands:\n" + "\n".join(lines) + "\n\n" + epilog() + (
            f"\n\n--config_dir DIR (or ${CONFIG_DIR_ENV}): your configuration folder; each\n"
            "<kind>/<name>.json in it replaces the shipped file of that name."
            if prog == "beamline" else "")
        + "\n\n'beamline COMMAND --help' shows a command's options.")
    parser.add_argument("command", choices=list(group), metavar="COMMAND",
                        help="one of the commands below")
    parser.add_argument("args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    return parser


def find(argv: Sequence[str]) -> tuple[list[str], Command | dict, list[str]]:
    """Walk the tree: (the words that named the entry, the entry, the words left)."""
    words: list[str] = []
    entry: Command | dict = COMMANDS
    rest = list(argv)
    while isinstance(entry, dict) and rest and rest[0] in entry:
        words.append(rest[0])
        entry = entry[rest.pop(0)]
    return words, entry, rest


def take_config_dir(argv: list[str]) -> list[str]:
    """``--config_dir DIR`` before the command: the user's configuration folder for every
    command it runs (``models.config``), passed on as ``$BEAMLINE_CONFIG_DIR`` so that the
    jobs and ``python -m`` aliases find it the same way. Returns the words after it."""
    if not argv or not argv[0].startswith("--config_dir"):
        return argv
    flag, _, folder = argv[0].partition("=")
    rest = argv[1:]
    if flag != "--config_dir":
        return argv
    if not folder:
        if not rest or rest[0].startswith("-"):
            raise ValueError("--config_dir needs a folder (its files <kind>/<name>.json "
                             "replace the shipped ones of the same name)")
        folder, rest = rest[0], rest[1:]
    if not os.path.isdir(folder):
        raise ValueError(f"--config_dir {folder}: not a folder")
    os.environ[CONFIG_DIR_ENV] = os.path.abspath(folder)
    return rest


def wants_help(args: Sequence[str]) -> bool:
    return "-h" in args or "--help" in args


def main(argv: Sequence[str] | None = None) -> int:
    """The console script: find the command, run its entry point under the exit-code table.

    Returns:
        The exit status (``models.exit_codes``).
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        argv = take_config_dir(argv)
    except ValueError as error:
        print(f"beamline: {error}", file=sys.stderr)
        return REFUSED
    words, entry, rest = find(argv)
    prog = " ".join(["beamline", *words])
    if isinstance(entry, dict):
        parser = _parser(prog, entry, DESCRIPTION if not words else
                         f"{prog}: one of the commands below")
        if not rest or wants_help(rest):
            parser.print_help(sys.stdout if rest else sys.stderr)
            return 0 if rest else REFUSED
        try:
            parser.parse_args(rest[:1])  # an unknown command: argparse's usage message
        except SystemExit:
            pass
        return REFUSED
    return run(entry, prog, rest)


def run(command: Command, prog: str, args: list[str]) -> int:
    """Run one command's entry point with its own arguments."""
    from models.exit_codes import run_command
    from models.quiet import quiet_imports

    quiet_imports()  # a program starts here: Beam's and TensorFlow's notices off the console
    if command.pipeline and wants_help(args) and "--on_beam" not in args:
        from pipelines.options import help_parser  # Beam's options only, not the graph

        help_parser(command.pipeline, command.summary, prog=prog).print_help()
        return 0
    module_name, function = command.target.split(":")
    # What the command records of itself (manifests' training_command, argparse's prog) reads
    # sys.argv: the command's own arguments after its name, as ``python -m`` gives them.
    saved, sys.argv = sys.argv, [prog, *args]
    try:
        entry_point = getattr(importlib.import_module(module_name), function)
        status = run_command(entry_point, args)
    finally:
        sys.argv = saved
    if wants_help(args) and status == 0:
        print("\n" + epilog())
    return status


if __name__ == "__main__":
    sys.exit(main())
