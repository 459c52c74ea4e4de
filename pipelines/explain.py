"""Explain an old decision: replay a sampled prediction with the exact model that made it.

Finds the sampled row, loads the model version that made it (checked by sha256), re-scores the
stored inputs and shows original against replayed output.

Usage::

    # one prediction
    python -m pipelines.explain --prediction_id req-0000042 --predictions out --registry registry

    # every sampled prediction of a run; exit status 1 if any replay differs
    python -m pipelines.explain --all --run_id batch-20261127T062357Z-1e77ee --predictions out

Credit: the stored raw fields go through the model again; the score must match within 1e-6,
and the decision and bank are re-derived with the offer rules in force when the rules version is
the stored one (otherwise the difference of versions is reported). Radar: the referenced volume
is decoded again and the sweep classified; the bit-packed removal mask must be identical.
"""

import argparse
import glob
import logging
import os
import sys

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds

from models import registry as model_registry
from models.provenance import code_version
from transforms.credit_rules import APPROVE, DEFAULT_RULES_PATH, choose_bank, decide, load_rules
from transforms.predictions import PARTITION_COLUMNS, PREDICTIONS

LOGGER = logging.getLogger(__name__)
SCORE_TOLERANCE = 1e-6


class ExplainError(Exception):
    """The prediction, its model version or its input cannot be found or trusted."""


def _schema(pipeline: str) -> pa.Schema:
    from transforms import credit_rows, radar_rows

    schema = (radar_rows if pipeline == "radar_qc" else credit_rows).PREDICTION_SCHEMA
    # Columns of the files, then the partition values parsed from the folder names.
    return pa.schema([f for f in schema if f.name not in PARTITION_COLUMNS]
                     + [pa.field("model_version", pa.string()), pa.field("dt", pa.string())])


def find_rows(root: str, prediction_id: str | None = None, run_id: str | None = None,
              pipeline: str | None = None) -> list[dict]:
    """Sampled prediction rows under ``<root>/predictions`` matching the given filters.

    Each pipeline's folder is read with that pipeline's schema, so files written before a
    column was added read it as null.
    """
    base = f"{root.rstrip('/')}/{PREDICTIONS}"
    pipelines = [pipeline] if pipeline else sorted(
        os.path.basename(p).split("=", 1)[1] for p in glob.glob(f"{base}/pipeline=*"))
    condition = None
    for column, value in (("prediction_id", prediction_id), ("run_id", run_id)):
        if value is not None:
            term = ds.field(column) == value
            condition = term if condition is None else condition & term
    rows = []
    for name in pipelines:
        folder = f"{base}/pipeline={name}"
        if not os.path.isdir(folder):
            continue
        partitioning = ds.partitioning(
            pa.schema([("model_version", pa.string()), ("dt", pa.string())]), flavor="hive")
        dataset = ds.dataset(folder, schema=_schema(name), partitioning=partitioning)
        rows.extend(dict(r, pipeline=name) for r in dataset.to_table(filter=condition).to_pylist())
    return rows


def load_model(registry: str, row: dict):
    """The registry's model version of a row, after checking it is the very model that made the
    prediction (the file's sha256 against the manifest and against the row).

    Returns:
        (ModelRef, loaded Keras model).

    Raises:
        ExplainError: the version is missing or its file is not the one recorded on the row.
    """
    import keras

    if row["pipeline"] == "radar_qc":
        import models.radar_qc.model  # noqa: F401 - registers the preprocessing layer
    try:
        ref = model_registry.resolve(registry, row["model_name"], row["model_version"])
    except model_registry.RegistryError as error:
        raise ExplainError(str(error)) from error
    if ref.sha256 != row["model_sha256"]:
        raise ExplainError(f"{row['model_name']} {row['model_version']} in {registry} has "
                           f"sha256 {ref.sha256}, the prediction was made by "
                           f"{row['model_sha256']}")
    return ref, keras.models.load_model(ref.path, compile=False)


def replay_credit(rows: list[dict], model, rules) -> list[dict]:
    """Re-score credit rows with one model; one comparison per row."""
    from models.credit.model import predict_scores
    from models.credit.schema import FIELD_NAMES

    if not rows:
        return []
    scores = predict_scores(model, [{f: r[f] for f in FIELD_NAMES} for r in rows])
    out = []
    for row, score in zip(rows, scores):
        score = float(score)
        same_rules = row.get("rules_version") == rules.version
        decision = decide(score, rules)
        fields = {f: row[f] for f in FIELD_NAMES}
        bank = choose_bank(score, fields, rules) if decision == APPROVE else None
        difference = abs(score - row["score"])
        match = difference <= SCORE_TOLERANCE and (
            not same_rules or (decision == row["decision"] and bank == row["bank"]))
        out.append({
            "prediction_id": row["prediction_id"], "match": match,
            "stored": {"score": row["score"], "decision": row["decision"], "bank": row["bank"]},
            "replayed": {"score": score, "decision": decision, "bank": bank},
            "score_difference": difference,
            "rules": {"stored": row.get("rules_version"), "current": rules.version,
                      "decision_replayed": same_rules},
        })
    return out


def replay_radar(rows: list[dict], model) -> list[dict]:
    """Re-decode each referenced volume and re-classify the sampled sweeps; masks must match."""
    from models.radar_qc.handler import radar_inference_fn
    from transforms.radar_io import open_volume
    from transforms.radar_rows import pack_mask
    from transforms.radar_volumes import keyed_sweeps

    out = []
    by_source: dict[str, list[dict]] = {}
    for row in rows:
        by_source.setdefault(row["source"], []).append(row)
    for source, sweeps in by_source.items():
        paths = tuple(source.split(";"))
        tree = open_volume(paths[0] if len(paths) == 1 else list(paths))
        data = {key.sweep_number: moments for key, moments in keyed_sweeps(tree, paths)}
        for row in sweeps:
            moments = data.get(row["sweep_number"])
            if moments is None:
                raise ExplainError(f"{source} has no sweep {row['sweep_number']}")
            classes = radar_inference_fn(model, [moments])[0].inference
            packed = pack_mask(classes)
            differing = int(np.sum(np.unpackbits(np.frombuffer(packed, np.uint8))
                                   != np.unpackbits(np.frombuffer(row["mask_packed"], np.uint8))))
            out.append({
                "prediction_id": row["prediction_id"], "match": packed == row["mask_packed"],
                "stored": {"fraction_removed": row["fraction_removed"]},
                "replayed": {"fraction_removed": _fraction_removed(classes)},
                "differing_gates": differing, "source": source,
            })
    return out


def _fraction_removed(classes: np.ndarray) -> float:
    from transforms.radar_volumes import class_counts

    return class_counts(classes)["fraction_removed"]


def replay(rows: list[dict], registry: str, rules_path: str = DEFAULT_RULES_PATH) -> list[dict]:
    """Replay rows of any pipeline, loading each (pipeline, model version) once.

    Every result carries the versions: model (name, version, sha256), code (stored and
    current) and, for credit, rules.
    """
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["pipeline"], row["model_name"], row["model_version"]),
                          []).append(row)
    rules = load_rules(rules_path)
    current_code = code_version()
    results = []
    for (pipeline, _, _), members in sorted(groups.items()):
        try:
            ref, model = load_model(registry, members[0])
            replayed = (replay_radar(members, model) if pipeline == "radar_qc"
                        else replay_credit(members, model, rules))
        except ExplainError as error:
            results.extend({"prediction_id": r["prediction_id"], "pipeline": pipeline,
                            "match": False, "error": str(error)} for r in members)
            continue
        by_id = {r["prediction_id"]: r for r in members}
        for result in replayed:
            row = by_id[result["prediction_id"]]
            result.update(pipeline=pipeline, event_time=str(row["event_time"]),
                          run_id=row["run_id"], run_mode=row["run_mode"],
                          model={"name": ref.name, "version": ref.version,
                                 "sha256": ref.sha256, "path": ref.path},
                          code={"stored": row["code_version"], "current": current_code})
        results.extend(replayed)
    return results


def describe(result: dict) -> str:
    """A person-readable account of one replay."""
    if "error" in result:
        return f"prediction {result['prediction_id']}: cannot replay: {result['error']}"
    lines = [f"prediction {result['prediction_id']} ({result['pipeline']}, event "
             f"{result['event_time']}, run {result['run_id']} [{result['run_mode']}])",
             f"  model:    {result['model']['name']} {result['model']['version']} sha256 "
             f"{result['model']['sha256'][:16]}... (matches the row)",
             f"  code:     stored {result['code']['stored']}, now {result['code']['current']}"]
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
    parser.add_argument("--pipeline", default=None, choices=("credit_scoring", "radar_qc"))
    parser.add_argument("--rules", default=DEFAULT_RULES_PATH, help="offer rules file")
    args = parser.parse_args(argv)
    if bool(args.prediction_id) == bool(args.all):
        parser.error("give --prediction_id or --all")
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
    sys.exit(main())
