"""Explain an old decision: replay a sampled prediction with the exact model that made it.

Finds the sampled row, loads the model version that made it (checked by sha256), re-scores the
stored inputs and shows original against replayed output.

Usage::

    # one prediction
    python -m pipelines.explain --prediction_id req-0000042 --predictions out --registry registry

    # every sampled prediction of a run; exit status 1 if any replay differs
    python -m pipelines.explain --all --run_id batch-20261127T062357Z-1e77ee --predictions out

Credit: the stored raw fields (the fields of the data set in the version's manifest) go through
the model again; the score must match within 1e-6, and the decision and bank are re-derived
with the offer rules in force when the rules version is the stored one (otherwise the
difference of versions is reported). Radar: the referenced volume
is decoded again and the sweep classified; the bit-packed removal mask must be identical.
"""

import argparse
import datetime
import glob
import logging
import os
import sys

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from models import audit
from models import registry as model_registry
from models.config import ConfigError
from models.exit_codes import run_command
from models.provenance import code_version
from pipelines.capabilities import CAPABILITIES, capability
from transforms.common.predictions import PARTITION_COLUMNS, PREDICTIONS
from transforms.radar.explain import ReplayError

LOGGER = logging.getLogger(__name__)


class ExplainError(Exception):
    """The prediction, its model version or its input cannot be found or trusted."""


def _version_folders(root: str, pipeline: str | None) -> list[str]:
    base = f"{root.rstrip('/')}/{PREDICTIONS}"
    pattern = f"pipeline={pipeline}" if pipeline else "pipeline=*"
    return sorted(glob.glob(f"{base}/{pattern}/model_name=*/model_version=*"))


def find_rows(root: str, prediction_id: str | None = None, run_id: str | None = None,
              pipeline: str | None = None) -> list[dict]:
    """Sampled prediction rows under ``<root>/predictions`` matching the given filters.

    Each model version's folder is read on its own, with the union of its files' schemas, so
    data sets with other fields never meet and files written before a column was added read
    it as null.
    """
    condition = None
    for column, value in (("prediction_id", prediction_id), ("run_id", run_id)):
        if value is not None:
            term = ds.field(column) == value
            condition = term if condition is None else condition & term
    rows = []
    for folder in _version_folders(root, pipeline):
        files = sorted(glob.glob(f"{folder}/dt=*/*.parquet"))
        if not files:
            continue
        schema = pa.unify_schemas([pq.read_schema(f) for f in files])
        dataset = ds.dataset(files, schema=schema)
        values = dict(part.split("=", 1) for part in folder.split("/")[-3:])
        for row in dataset.to_table(filter=condition).to_pylist():
            rows.append(dict(row, **{k: values[k] for k in PARTITION_COLUMNS if k in values}))
    return rows


def load_model(registry: str, row: dict):
    """The registry's model version of a row, after checking it is the very model that made the
    prediction (the file's sha256 against the manifest and against the row).

    Returns:
        (ModelRef, loaded model).

    Raises:
        ExplainError: the version is missing or its file is not the one recorded on the row.
    """
    try:
        ref = model_registry.resolve(registry, row["model_name"], row["model_version"])
    except model_registry.RegistryError as error:
        raise ExplainError(str(error)) from error
    # A row names the model file's sha256 (scored in a run) or an export's digest (scored by
    # the serving function's SavedModel).
    if row["model_sha256"] not in ref.digests():
        raise ExplainError(f"{row['model_name']} {row['model_version']} in {registry} has "
                           f"sha256 {ref.sha256}, the prediction was made by "
                           f"{row['model_sha256']}")
    return ref, capability(row["pipeline"]).load_model(ref.path, ref.manifest)


def replay(rows: list[dict], registry: str, rules_path: str | None = None) -> list[dict]:
    """Replay rows of any pipeline, loading each (pipeline, model, version) once.

    Args:
        rows: sampled prediction rows (``find_rows``).
        registry: the model registry.
        rules_path: credit offer rules to re-derive decisions with (default: the file
            archived under each row's rules version, else the model's current
            ``<config>/offer_rules/<model name>.json``).

    Every result carries the versions: model (name, version, sha256), code (stored and
    current) and, for credit, rules.
    """
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["pipeline"], row["model_name"], row["model_version"]),
                          []).append(row)
    current_code = code_version()
    results = []
    for (pipeline, _, _), members in sorted(groups.items()):
        try:
            ref, model = load_model(registry, members[0])
            replayed = capability(pipeline).replay(members, model, ref.manifest, rules_path,
                                                   registry)
        except (ExplainError, ReplayError, ConfigError, OSError) as error:
            results.extend({"prediction_id": r["prediction_id"], "pipeline": pipeline,
                            "match": False, "error": str(error)} for r in members)
            continue
        by_id = {r["prediction_id"]: r for r in members}
        moves = model_registry.audit_log(registry, ref.name)
        for result in replayed:
            row = by_id[result["prediction_id"]]
            result.update(pipeline=pipeline, event_time=str(row["event_time"]),
                          in_service=in_service(moves, row),
                          run_id=row["run_id"], run_mode=row["run_mode"],
                          model={"name": ref.name, "version": ref.version,
                                 "sha256": row["model_sha256"], "path": ref.path},
                          code={"stored": row["code_version"], "current": current_code})
        results.extend(replayed)
    return results


def in_service(moves: list[dict], row: dict) -> dict:
    """Where the model's aliases pointed when the row was scored (its ``processed_at``, else
    its event time): {"at": time, alias: version}. A backfill or a pinned run may have scored
    with another version on purpose; the row records the one that did."""
    when = row.get("processed_at") or row.get("event_time")
    if not isinstance(when, datetime.datetime):
        return {}
    when = when if when.tzinfo else when.replace(tzinfo=datetime.UTC)
    return {"at": when.isoformat(), **{alias: record["to"] for alias, record in
                                       sorted(audit.aliases_at(moves, when).items())}}


def describe(result: dict) -> str:
    """A person-readable account of one replay."""
    if "error" in result:
        return f"prediction {result['prediction_id']}: cannot replay: {result['error']}"
    lines = [f"prediction {result['prediction_id']} ({result['pipeline']}, event "
             f"{result['event_time']}, run {result['run_id']} [{result['run_mode']}])",
             f"  model:    {result['model']['name']} {result['model']['version']} sha256 "
             f"{result['model']['sha256'][:16]}... (matches the row)",
             f"  code:     stored {result['code']['stored']}, now {result['code']['current']}"]
    service = dict(result.get("in_service") or {})
    if service:
        at = service.pop("at")
        named = ", ".join(f"{alias} {version}" for alias, version in service.items()) or \
            "no alias set"
        production = service.get("production")
        note = ("" if production in (None, result["model"]["version"]) else
                f" (this row was scored by {result['model']['version']}: run mode "
                f"{result['run_mode']})")
        lines.append(f"  in service when scored ({at}): {named}{note}")
    if "rules" in result:
        rules = result["rules"]
        lines.append(f"  rules:    stored {rules['stored']}, now {rules['current']}"
                     + ("" if rules["decision_replayed"]
                        else " (differ: decision not compared)"))
    for name in result["stored"]:
        lines.append(f"  {name:<17} stored {result['stored'][name]!s:<22} replayed "
                     f"{result['replayed'][name]}")
    if "differing_gates" in result:
        lines.append(f"  mask: {result['differing_gates']} gates differ")
    lines.append(f"  => {'MATCH' if result['match'] else 'MISMATCH'}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--predictions", default="out",
                        help="output root holding predictions/ (a backfill's own root too)")
    parser.add_argument("--registry", default="registry")
    parser.add_argument("--prediction_id", default=None, help="the prediction to explain")
    parser.add_argument("--all", action="store_true",
                        help="replay every sampled prediction (of --run_id, --pipeline)")
    parser.add_argument("--run_id", default=None)
    parser.add_argument("--pipeline", default=None, choices=sorted(CAPABILITIES))
    parser.add_argument("--rules", default=None,
                        help="credit offer rules file (default: the one archived under each "
                             "row's rules version, else <config>/offer_rules/<model name>.json)")
    args = parser.parse_args(argv)
    if bool(args.prediction_id) == bool(args.all):
        parser.error("give --prediction_id or --all")
    if not os.path.isdir(os.path.join(args.predictions, PREDICTIONS)):
        parser.error(f"no {PREDICTIONS}/ folder under {args.predictions}")
    rows = find_rows(args.predictions, args.prediction_id, args.run_id, args.pipeline)
    if not rows:
        parser.error(f"no sampled prediction matches under {args.predictions}/predictions")
    results = replay(rows, args.registry, args.rules)
    mismatches = [r for r in results if not r["match"]]
    if args.prediction_id:
        print("\n\n".join(describe(r) for r in results))
    else:
        print(f"replayed {len(results)} sampled predictions: {len(results) - len(mismatches)} "
              f"match, {len(mismatches)} differ")
        for result in mismatches[:20]:
            print(describe(result))
        if len(mismatches) > 20:
            print(f"... and {len(mismatches) - 20} more")
    return 1 if mismatches else 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    sys.exit(run_command(main))
