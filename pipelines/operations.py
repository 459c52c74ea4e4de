"""The operations page of a model (``transforms.evaluation.operations_page``), built from one or
more evaluation outputs; every evaluation run rebuilds its own output's page.

Usage::

    beamline models page --model credit_german --evaluations out/evaluation_demo/shifted \\
        --evaluations out/shadow_demo --registry registry --output out/operations/credit_german
"""

import argparse
import datetime
import os
import sys

from models import registry as model_registry
from models.exit_codes import run_command
from pipelines.capabilities import capability
from transforms.evaluation.operations_page import OPERATIONS, gather, write_page
from transforms.evaluation.outcome import EVALUATION


def find_pipeline(evaluations: list[str], model_name: str) -> str:
    """The pipeline whose metrics hold the model (the first output that has it).

    Raises:
        ValueError: no output holds metrics of the model.
    """
    for root in evaluations:
        folder = os.path.join(root, EVALUATION, "metrics")
        for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
            if os.path.isdir(os.path.join(folder, name, f"model_name={model_name}")):
                return name.split("=", 1)[1]
    raise ValueError(f"no evaluation metrics of model {model_name} under "
                     f"{', '.join(evaluations)} (looked in <output>/{EVALUATION}/metrics/)")


def build_page(evaluations: list[str], model_name: str, registry: str,
               directory: str | None = None, now: datetime.datetime | None = None) -> dict:
    """Build the page; returns {"path", "runs": evaluation run ids on it, "pipeline"}."""
    pipeline = find_pipeline(evaluations, model_name)
    sources = gather(evaluations, pipeline, model_name)["sources"]
    directory = directory or os.path.join(evaluations[0], EVALUATION, OPERATIONS, model_name)
    path = write_page(directory, model_name, pipeline, sources, registry,
                      now or datetime.datetime.now(datetime.UTC),
                      capability(pipeline).history_metrics)
    return {"path": path, "pipeline": pipeline,
            "runs": sorted({r["evaluation_run_id"] for s in sources for r in s["rows"]})}


def rebuild_after_run(output: str, model_name: str, registry: str,
                      now: datetime.datetime) -> str | None:
    """The output's own page after an evaluation run; None for a remote output (the page
    reads folders with the os module: build it with the command from a local copy)."""
    if "://" in output:
        return None
    return build_page([output], model_name, registry, now=now)["path"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="model name, e.g. credit_german")
    parser.add_argument("--evaluations", action="append", required=True, metavar="OUTPUT",
                        help="an evaluation output root (it holds evaluation/metrics/); repeat "
                             "it for several")
    parser.add_argument("--registry", default="registry")
    parser.add_argument("--output", default=None, metavar="FOLDER",
                        help="folder of the page (default: <first output>/evaluation/"
                             "operations/<model>)")
    args = parser.parse_args(argv)
    missing = [e for e in args.evaluations if not os.path.isdir(e)]
    if missing:
        parser.error(f"--evaluations {missing[0]} is not a folder")
    try:
        page = build_page(args.evaluations, args.model, args.registry, args.output)
    except (ValueError, model_registry.RegistryError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"operations page of {args.model} ({page['pipeline']}): {page['path']} "
          f"({len(page['runs'])} evaluation runs)")
    return 0


if __name__ == "__main__":
    sys.exit(run_command(main))
