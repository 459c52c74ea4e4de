"""Scheduled evaluation: sampled predictions joined with late truth; metrics, drift, a report.

With --decide, also a retraining decision.

Usage::

    # weekly, from cron: evaluate what the credit pipeline sampled, decide, exit 3 to retrain
    python -m pipelines.evaluate --pipeline credit_scoring --predictions out \\
        --truth 'truth/*.jsonl' --registry registry --output out --decide

    # another credit data set's model (its own slices: <config>/evaluation/credit_crx.json)
    python -m pipelines.evaluate --pipeline credit_scoring --model_name credit_crx ...

    # radar QC sweeps against truth masks (Parquet with prediction_id, mask_packed, ...)
    python -m pipelines.evaluate --pipeline radar_qc --predictions out \\
        --truth 'truth/radar_masks.parquet' --output out

    # real radar volumes, no truth: each radar and tilt against its own reference period
    python -m pipelines.evaluate --pipeline radar_qc --predictions out --output out --decide

One model is evaluated per run (``--model_name``, default the pipeline's own): its slices and
drift limits come from ``<config>/evaluation/<model name>.json``, checked against the fields of
the data set in its manifest; its error costs from that data set.

Outputs under ``<output>/evaluation/``: ``metrics/pipeline=<p>/model_name=<m>/`` (Parquet, one
row per metric x slice x model version x window, a file per run, so history accumulates),
``reports/<p>/<m>/<run id>/index.html`` (+ summary.json and PNG plots), the model's operations
page ``operations/<m>/index.html`` (every run so far; ``pipelines.operations``),
``latest_<p>_<m>.json`` and, with --decide,
``decisions/pipeline=<p>/model_name=<m>/<time>-<run id>.json``. Truth records that cannot be
used go to ``<output>/dead_letters/pipeline=evaluate/model_name=<m>/`` (stage truth).

Exit status (the table of ``models.exit_codes``): 0 when done (and no retraining asked), 3 when
--decide asks for retraining, 2 for input or configuration a user can fix, 1 for a bug, so cron
or an orchestrator can act on it.

Notes:
    The join and all metrics run in Beam, so the job scales with the runner; the report and
    the decision are written by this process afterwards from the metric rows (small).
    Each (model version, window) group is evaluated on one worker: metrics such as AUC need
    every score of the group at once.
"""

import dataclasses
import datetime
import logging
import sys

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from models import registry as model_registry
from models.config import default_path, evaluation_config_for, load_retraining_rules
from models.credit.dataset import dataset_from_manifest
from models.credit.snapshots import snapshot_dir, snapshot_schema
from models.exit_codes import RETRAIN
from pipelines.capabilities import Capability, capability
from pipelines.launch import build_and_run, cli
from pipelines.operations import rebuild_after_run
from pipelines.options import EvaluateOptions, RunConfig, resolve_run
from transforms.common.dead_letters import DEAD_LETTERS, WriteDeadLetters
from transforms.common.parquet_sink import WritePartitionedParquet
from transforms.evaluation import join as evaluation
from transforms.evaluation.join import METRIC_SCHEMA, METRICS, JoinFn
from transforms.evaluation.metrics import CALIBRATION, GroupMetricsFn, MonitorFn
from transforms.evaluation.outcome import EVALUATION, EvaluationRun, finish
from transforms.evaluation.reading import (
    ParseTruthFn,
    partition_values,
    prediction_files,
    read_prediction_file,
    read_truth_file,
    truth_files,
)
from transforms.evaluation.retraining import evidence_sentence
from transforms.evaluation.snapshots import snapshot_row

LOGGER = logging.getLogger(__name__)
PIPELINE_NAME = "evaluate"


def resolve(options: PipelineOptions) -> RunConfig:
    """Check options once, with messages that name the flags (the options are not written).

    Raises:
        ValueError: no --truth, or an unusable date range.
    """
    evaluate = options.view_as(EvaluateOptions)
    config = resolve_run(options, PIPELINE_NAME,
                         capability(evaluate.evaluated_pipeline).default_model,
                         run_id_prefix="eval")
    if not evaluate.truth and capability(evaluate.evaluated_pipeline).monitoring is None:
        raise ValueError("give --truth, a glob of ground-truth files")
    if evaluate.dt_from and evaluate.dt_to and evaluate.dt_from > evaluate.dt_to:
        raise ValueError(f"--dt_from {evaluate.dt_from} is after --dt_to {evaluate.dt_to}")
    return config


@dataclasses.dataclass(frozen=True)
class EvaluationPlan:
    """What the launch step found for an evaluation run: the prediction files it reads, the
    evaluated versions' manifests, the configuration files and the snapshot it writes."""

    files: tuple[str, ...]
    versions: tuple[str, ...]
    manifests: dict
    dataset: object
    config_path: str
    rules_path: str
    metric_config: dict
    snapshot_id: str | None


def prepare(options: PipelineOptions) -> RunConfig:
    """The launch step: checked options, the prediction files listed, the versions'
    manifests read, the configuration and (with --decide) the retraining rules checked."""
    config = resolve(options)
    evaluate = config.view(EvaluateOptions)
    name, model_name = evaluate.evaluated_pipeline, config.model_name
    cap = capability(name)
    rules_path = evaluate.retraining_rules or default_path("retraining", model_name)
    if evaluate.decide:
        load_retraining_rules(rules_path)  # a bad rules file stops the run here
    versions = evaluate.model_versions.split(",") if evaluate.model_versions else None
    files = prediction_files(evaluate.predictions, name, model_name, versions,
                             evaluate.dt_from, evaluate.dt_to)
    if not files:
        raise ValueError(f"no sampled predictions of {name} model {model_name} under "
                         f"{evaluate.predictions}/predictions/ for the given filters")
    found_versions = sorted({partition_values(p)["model_version"] for p in files})
    manifests = model_manifests(config.registry, model_name, found_versions)
    dataset = newest_dataset(cap, manifests)
    metrics_config = metric_config(evaluate.config, model_name, dataset)
    config_path = (f"none ({metrics_config['absent']} absent): overall metrics and drift, no "
                   f"slices" if "absent" in metrics_config
                   else evaluate.config or default_path(EVALUATION, model_name))
    plan = EvaluationPlan(
        files=tuple(files), versions=tuple(found_versions), manifests=manifests,
        dataset=dataset, config_path=config_path, rules_path=rules_path,
        metric_config=metrics_config,
        snapshot_id=snapshot_id(evaluate, config.run_id, dataset))
    return config.launched({}, [
        f"{len(files)} prediction files of {name} {model_name} (versions "
        f"{', '.join(found_versions)}); evaluation configuration {config_path}"], plan)


def model_manifests(registry: str, model_name: str, versions: list[str]) -> dict:
    """Per model version its manifest, or None when the version is not in the registry (drift
    is then skipped for it, with a warning)."""
    manifests = {}
    for version in versions:
        try:
            manifests[version] = model_registry.resolve(registry, model_name, version,
                                                        verify=False).manifest
        except model_registry.RegistryError as error:
            LOGGER.warning("no drift for %s %s: %s", model_name, version, error)
            manifests[version] = None
    return manifests


def drift_statistics(manifest: dict | None) -> dict:
    """The training statistics drift is measured against: every input with figures, and the
    score; with the version's calibrator (``calibration``) for the estimates before labels."""
    if not manifest:
        return {}
    stats = {k: v for k, v in manifest.get("feature_statistics", {}).items()
             if v.get("kind") in ("numeric", "categorical") and v.get("count")}
    if "score_statistics" in manifest:
        stats["score"] = manifest["score_statistics"]
    if manifest.get("calibration"):
        stats[CALIBRATION] = manifest["calibration"]
    return stats


def newest_dataset(cap: Capability, manifests: dict):
    """The data set of the newest evaluated version in the registry (None for radar, or when
    no evaluated version is in the registry)."""
    known = [m for _, m in sorted(manifests.items()) if m]
    return dataset_from_manifest(known[-1]) if cap.tabular and known else None


def metric_config(config_path: str | None, model_name: str, dataset) -> dict:
    """The evaluation configuration (``--config``, the model's own file, or the defaults when
    it has none), checked against the data set's fields, with its error costs added (None for
    models without a data set)."""
    if dataset is None:
        return {**evaluation_config_for(config_path, model_name), "costs": None}
    return {**evaluation_config_for(config_path, model_name, dataset.stored_kinds),
            "costs": dataset.costs}


def snapshot_id(evaluate: EvaluateOptions, run_id: str, dataset) -> str | None:
    """The training snapshot this run writes: credit runs keep their labelled rows unless told
    not to."""
    if dataset is None or evaluate.no_snapshot:
        return None
    return evaluate.snapshot_id or f"snap-{run_id}"


def build(pipeline, config: RunConfig) -> dict:
    """Wire the evaluation graph.

    Returns:
        The PCollections: metrics (rows), dead_letters, metrics_files, dead_letters_files.
    """
    evaluate, plan = config.view(EvaluateOptions), config.setup
    name, model_name = evaluate.evaluated_pipeline, config.model_name
    cap = capability(name)
    files, found_versions, manifests = list(plan.files), list(plan.versions), plan.manifests
    dataset, metrics_config, snapshot = plan.dataset, plan.metric_config, plan.snapshot_id
    # Drift of a shadow version is measured against its own training statistics.
    others = sorted(set(model_registry.list_versions(config.registry, model_name))
                    - set(found_versions)) if cap.tabular else []
    statistics = ({v: drift_statistics(m) for v, m in {
        **manifests, **model_manifests(config.registry, model_name, others)}.items()}
        if cap.tabular else {})
    window = evaluate.window or metrics_config.get("window", "week")
    run = {"run_id": config.run_id, "evaluated_at": datetime.datetime.now(datetime.UTC)}
    LOGGER.info("evaluating %d prediction files of %s %s (versions %s)", len(files), name,
                model_name, ", ".join(found_versions))

    predictions = (pipeline
                   | "PredictionFiles" >> beam.Create(files)
                   | "SpreadPredictionFiles" >> beam.Reshuffle()
                   | "ReadPredictions" >> beam.FlatMap(read_prediction_file))
    truth = (pipeline
             # Radar without --truth: watched only (radar_monitoring), nothing scored.
             | "TruthFiles" >> beam.Create(truth_files(evaluate.truth) if evaluate.truth
                                           else [])
             | "SpreadTruthFiles" >> beam.Reshuffle()
             | "ReadTruth" >> beam.FlatMap(read_truth_file)
             | "ParseTruth" >> beam.ParDo(ParseTruthFn(PIPELINE_NAME, config.run_id))
             .with_outputs(DEAD_LETTERS, main="rows"))
    joined = (
        {"predictions": predictions | "KeyPredictions" >> beam.Map(
            lambda r: (r["prediction_id"], r)),
         "truth": truth.rows | "KeyTruth" >> beam.Map(lambda r: (r["prediction_id"], r))}
        | "JoinOnPredictionId" >> beam.CoGroupByKey()
        | "ResolveJoin" >> beam.ParDo(JoinFn()).with_outputs("counts", main="rows"))
    counts = (joined.counts
              | "SumJoinCounts" >> beam.CombinePerKey(sum)
              | "JoinCountRows" >> beam.Map(
                  lambda kv: evaluation.join_count_row(*kv, name, model_name, run)))
    group_metrics = (joined.rows
                     | "ServedAndShadow" >> beam.FlatMap(evaluation.shadow_views)
                     | "KeyByVersionAndWindow" >> beam.FlatMap(
                         lambda r: [(k, r) for k in evaluation.group_keys(r, window)])
                     | "GroupForMetrics" >> beam.GroupByKey()
                     | "ComputeMetrics" >> beam.ParDo(GroupMetricsFn(
                         name, cap.group_metrics, metrics_config, statistics, run)))
    parts = [counts, group_metrics]
    if cap.monitoring is not None:  # watched without truth: every sampled row counts
        parts.append(joined.rows
                     | "KeyByMonitored" >> beam.Map(lambda r: (
                         (r["model_name"], r["model_version"], r.get(cap.monitor_by)),
                         cap.monitored_fields(r)))
                     | "GroupForMonitoring" >> beam.GroupByKey()
                     | "Monitor" >> beam.ParDo(MonitorFn(name, cap.monitoring, metrics_config,
                                                         window, run)))
    metrics = parts | "AllMetrics" >> beam.Flatten()
    base = f"{config.output.rstrip('/')}/{EVALUATION}/{METRICS}"
    if snapshot:
        _ = (joined.rows
             | "LabelledRows" >> beam.Filter(lambda r: r.get("label") is not None)
             | "SnapshotRows" >> beam.Map(snapshot_row, dataset.field_names)
             | "WriteSnapshot" >> WritePartitionedParquet(
                 base=snapshot_dir(config.registry, model_name, snapshot),
                 schema=snapshot_schema(dataset.kinds), partition_columns=(),
                 file_prefix=config.run_id, max_rows_per_file=config.max_rows_per_file))
    return {
        "metrics": metrics,
        "dead_letters": truth[DEAD_LETTERS],
        "metrics_files": metrics | "WriteMetrics" >> WritePartitionedParquet(
            base=base, schema=METRIC_SCHEMA, partition_columns=("pipeline", "model_name"),
            file_prefix=config.run_id, max_rows_per_file=config.max_rows_per_file),
        "dead_letters_files": truth[DEAD_LETTERS] | "WriteDeadLetters" >> WriteDeadLetters(
            config.output, config.run_id, model_name),
    }


def run(argv=None, test_pipeline=None) -> dict:
    """Parse options, run the Beam job, then decide and report.

    Returns:
        {"report": html path, "decision": record or None, "summary": ..., "rows": metric rows}
    """
    result, config = build_and_run(argv, test_pipeline, PIPELINE_NAME,
                                   __doc__.split("\n")[0], prepare, build)
    evaluate, plan = config.view(EvaluateOptions), config.setup
    now = (evaluation.parse_time(evaluate.now) if evaluate.now
           else datetime.datetime.now(datetime.UTC))
    cap = capability(evaluate.evaluated_pipeline)
    outcome = finish(EvaluationRun(
        pipeline=cap.pipeline, model_name=config.model_name, run_id=config.run_id,
        output=config.output, registry=config.registry, predictions=evaluate.predictions,
        truth=evaluate.truth, config=plan.config_path,
        filters={"model_versions": evaluate.model_versions, "dt_from": evaluate.dt_from,
                 "dt_to": evaluate.dt_to},
        retraining_rules=(load_retraining_rules(plan.rules_path) if evaluate.decide
                          else None),
        history_metrics=cap.history_metrics, mask_examples=cap.mask_examples,
        snapshot_id=plan.snapshot_id), now)
    outcome["operations_page"] = rebuild_after_run(config.output, config.model_name,
                                                   config.registry, now)
    join = outcome["summary"]["join"]
    print(f"evaluate {cap.pipeline} {config.model_name} run {config.run_id}: {result.state}\n"
          f"  joined {join.get('matched', 0)} predictions with truth; unmatched: "
          f"{join.get('predictions_unmatched', 0)} predictions, {join.get('truth_unmatched', 0)}"
          f" truth rows; {join.get('truth_duplicates', 0)} duplicate truth rows (last "
          f"label_time kept)\n"
          f"  metrics: {config.output.rstrip('/')}/{EVALUATION}/{METRICS}/"
          f"pipeline={cap.pipeline}/model_name={config.model_name}/\n"
          f"  report:  {outcome['report']}"
          + (f"\n  operations page: {outcome['operations_page']}"
             if outcome["operations_page"] else ""))
    snapshot = outcome["summary"].get("snapshot")
    if snapshot:
        print(f"  training snapshot: {snapshot['snapshot_id']} ({snapshot['rows']} labelled rows; "
              f"{snapshot['sampled_predictions_without_label']} sampled predictions have no "
              f"label yet)")
    decision = outcome["decision"]
    if decision is not None:
        print(f"  decision: {'RETRAIN' if decision['retrain'] else 'no retraining'} "
              f"({decision['reason']})" + (f"\n  retrain with: {decision['command']}"
                                            if decision["retrain"] else "")
              + (f"\n  alerts for a person: {', '.join(decision['alerts'])}"
                 if decision["alerts"] else ""))
        for check in decision["checks"]:
            if check["fired"]:
                print(f"    {check['name']}: {evidence_sentence(check)}")
    return outcome


def main(argv=None) -> int:
    """The CLI: exit status 3 when the decision is to retrain."""
    outcome = run(argv)
    decision = outcome["decision"]
    return RETRAIN if decision and decision["retrain"] else 0


if __name__ == "__main__":
    sys.exit(cli(main))
