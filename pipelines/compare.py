"""Challenger against champion as a Beam batch job, for windows too large for one process.

The snapshot files of the window are read in parallel, each prediction keeps its newest label,
both versions score every row through RunInference, and the scores (three numbers a row) are
gathered for the decision, which is the same pure function as ``models.credit.compare`` (AUC
and the bootstrap need every score of the window at once).

With ``--shadow_evidence OUT --shadow_truth GLOB`` the evidence is live traffic instead: the
sampled rows of credit scoring runs under ``OUT`` where the challenger was the shadow of the
champion (``shadow_model_version``), joined with their late labels; nothing is scored again,
both versions' answers are already in the rows.

Usage::

    python -m pipelines.compare --registry registry --model_name credit_german \\
        --challenger v0002 [--champion production] [--snapshots ID,ID] [--promote] \\
        [--runner DataflowRunner ...]
    python -m pipelines.compare --registry registry --challenger v0002 \\
        --shadow_evidence out --shadow_truth 'truth/*.jsonl'

Exit status: 0 accepted, 4 refused, 2 on errors (as ``models.credit.compare``).
"""

import json
import sys

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.ml.inference.base import RunInference
from apache_beam.options.pipeline_options import PipelineOptions

from models.credit import compare
from models.credit.handler import credit_model_handler
from models.credit.snapshots import read_file_rows, snapshot_files
from models.exit_codes import PROMOTION_REFUSED
from models.promotion import promote
from models.registry import PRODUCTION, is_alias
from pipelines.launch import build_and_run, cli
from pipelines.options import CompareOptions, RunConfig, resolve_run
from transforms.common.dead_letters import DEAD_LETTERS
from transforms.evaluation.join import resolve_join
from transforms.evaluation.reading import (
    ParseTruthFn,
    prediction_files,
    read_prediction_file,
    read_truth_file,
    truth_files,
)


def prepare(options: PipelineOptions) -> RunConfig:
    """Check options once (the options are not written); the versions are resolved when the
    comparison is prepared in ``build``, which reads their manifests."""
    config = resolve_run(options, "compare", "credit_german")
    args = config.view(CompareOptions)
    if not args.challenger:
        raise ValueError("give --challenger, the version to compare with the champion")
    if bool(args.shadow_evidence) != bool(args.shadow_truth):
        raise ValueError("--shadow_evidence and --shadow_truth go together")
    return config


def shadow_pair(row: dict, champion: str, challenger: str) -> list[tuple[str, dict]]:
    """(prediction id, row) for a sampled row the champion served and the challenger scored
    as the shadow; nothing for any other row."""
    if row.get("model_version") != champion or row.get("shadow_model_version") != challenger \
            or row.get("shadow_score") is None:
        return []
    return [(row["prediction_id"], row)]


def live_rows(pipeline, config: RunConfig, args, comparison):
    """(prediction id, joined row) of the live requests both versions answered, labelled."""
    files = prediction_files(args.shadow_evidence, "credit_scoring", config.model_name,
                             [comparison.champion.version])
    if not files:
        raise ValueError(f"no sampled predictions of {comparison.champion.version} under "
                         f"{args.shadow_evidence}/predictions/")
    predictions = (pipeline
                   | "PredictionFiles" >> beam.Create(files)
                   | "ReadPredictions" >> beam.FlatMap(read_prediction_file)
                   | "ShadowRows" >> beam.FlatMap(shadow_pair, comparison.champion.version,
                                                  comparison.challenger.version))
    truth = (pipeline
             | "TruthFiles" >> beam.Create(truth_files(args.shadow_truth))
             | "ReadTruth" >> beam.FlatMap(read_truth_file)
             | "ParseTruth" >> beam.ParDo(ParseTruthFn("compare", config.run_id))
             .with_outputs(DEAD_LETTERS, main="rows"))
    return ({"predictions": predictions,
             "truth": truth.rows | "KeyTruth" >> beam.Map(lambda r: (r["prediction_id"], r))}
            | "JoinLabels" >> beam.CoGroupByKey()
            | "Resolve" >> beam.MapTuple(lambda pid, grouped: (pid, resolve_join(
                pid, list(grouped["predictions"]), list(grouped["truth"]))[0]))
            | "Labelled" >> beam.Filter(lambda kv: kv[1] is not None
                                        and kv[1].get("label") is not None))


def decide_live(items, comparison, evidence: str) -> dict:
    """The decision on live rows: both versions' scores are already in each row."""
    rows = [row for _, row in sorted(items, key=lambda kv: kv[0])]
    return compare.decide(comparison, rows, [r["score"] for r in rows],
                          [r["shadow_score"] for r in rows], live=evidence)


def build(pipeline, config: RunConfig) -> dict:
    """Wire the comparison; returns {"decision": a one-element PCollection of the record}."""
    args = config.view(CompareOptions)
    comparison = compare.prepare(
        config.registry, config.model_name, args.challenger, args.champion,
        tuple(s for s in (args.snapshots or "").split(",") if s), args.promotion_rules,
        live=bool(args.shadow_evidence))
    if args.shadow_evidence:
        evidence = (f"live requests {comparison.challenger.version} scored as the shadow of "
                    f"{comparison.champion.version} (sampled rows under "
                    f"{args.shadow_evidence}, labels {args.shadow_truth})")
        decision = (live_rows(pipeline, config, args, comparison)
                    | "GatherLive" >> beam.combiners.ToList()
                    | "DecideLive" >> beam.Map(decide_live, comparison, evidence)
                    | "WriteLiveRecord" >> beam.Map(lambda record: (compare.write_record(
                        config.registry, record), record)))
        return {"decision": decision}
    dataset = comparison.dataset
    start = compare.window_start(comparison.challenger.manifest)
    rows = (pipeline
            | "SnapshotFiles" >> beam.Create([
                file for snapshot_id in comparison.snapshot_ids
                for file in snapshot_files(comparison.registry, comparison.model_name,
                                           snapshot_id)])
            | "SpreadFiles" >> beam.Reshuffle()
            | "ReadWindow" >> beam.FlatMap(read_file_rows, dataset.field_names, start)
            | "KeyByPrediction" >> beam.Map(lambda r: (r["prediction_id"], r))
            | "GroupLabels" >> beam.GroupByKey()
            | "NewestLabel" >> beam.MapTuple(lambda pid, rs: (pid, compare.newest_labels(rs)[0])))
    fields = rows | "Inputs" >> beam.MapTuple(
        lambda pid, r: (pid, {f: r[f] for f in dataset.field_names}))
    scored = {"row": rows}
    for role, ref in (("champion", comparison.champion), ("challenger", comparison.challenger)):
        scored[role] = (fields
                        | f"Score{role.title()}" >> RunInference(
                            credit_model_handler(ref.path, dataset.kinds))
                        | f"{role.title()}Score" >> beam.MapTuple(
                            lambda pid, result: (pid, float(result.inference))))

    def gather(items):
        # Sorted by prediction id: the bootstrap draws the same rows on every runner.
        items = sorted(items, key=lambda kv: kv[0])
        window = [grouped["row"][0] for _, grouped in items]
        return compare.decide(comparison, window,
                              [grouped["champion"][0] for _, grouped in items],
                              [grouped["challenger"][0] for _, grouped in items])

    decision = (scored
                | "JoinScores" >> beam.CoGroupByKey()
                | "Gather" >> beam.combiners.ToList()
                | "Decide" >> beam.Map(gather)
                | "WriteRecord" >> beam.Map(lambda record: (compare.write_record(
                    config.registry, record), record)))
    return {"decision": decision}


def run(argv=None, test_pipeline=None) -> int:
    """Run the job, print the comparison, promote if asked and accepted.

    Returns:
        0 accepted, 4 refused.
    """
    _, config = build_and_run(argv, test_pipeline, "compare", __doc__.split("\n")[0],
                              prepare, build, writes_output=False)
    args = config.view(CompareOptions)
    path, record = _newest_record(config.registry, config.model_name, args.challenger)
    print(compare.describe(record) + f"\n  decision record: {path}")
    if record["accepted"] and args.promote:
        alias = args.champion if is_alias(args.champion) else PRODUCTION
        entry = promote(config.registry, config.model_name, record["challenger"]["version"],
                        alias, reason="challenger accepted against champion", decision=path)
        print(f"  promoted: {alias} {entry['from']} -> {entry['to']}")
    return 0 if record["accepted"] else PROMOTION_REFUSED


def _newest_record(registry: str, model_name: str, challenger: str) -> tuple[str, dict]:
    """The decision record the job just wrote (records are named by time)."""
    pattern = FileSystems.join(registry, model_name, compare.PROMOTIONS,
                               f"*-{challenger}-vs-*.json")
    path = sorted(m.path for m in FileSystems.match([pattern])[0].metadata_list)[-1]
    with FileSystems.open(path) as f:
        return path, json.loads(f.read().decode("utf-8"))


main = run  # the command: 0 accepted, 4 refused

if __name__ == "__main__":
    sys.exit(cli(main))
