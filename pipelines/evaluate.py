"""Scheduled evaluation: sampled predictions joined with late truth; metrics, drift, a report.

With --decide, also a retraining decision.

Usage::

    # weekly, from cron: evaluate what the credit pipeline sampled, decide, exit 3 to retrain
    python -m pipelines.evaluate --pipeline credit_scoring --predictions out \\
        --truth 'truth/*.jsonl' --registry registry --output out --decide

    # radar QC sweeps against truth masks (Parquet with prediction_id, mask_packed, ...)
    python -m pipelines.evaluate --pipeline radar_qc --predictions out \\
        --truth 'truth/radar_masks.parquet' --output out

Outputs under ``<output>/evaluation/``: ``metrics/pipeline=<p>/`` (Parquet, one row per
metric x slice x model version x window, a file per run, so history accumulates),
``reports/<p>/<run id>/index.html`` (+ summary.json and PNG plots), ``latest_<p>.json`` and,
with --decide, ``decisions/pipeline=<p>/<time>-<run id>.json``. Truth records that cannot be
used go to ``<output>/dead_letters/pipeline=evaluate/`` (stage truth).

Exit status: 0 when done (and no retraining asked), 3 when --decide asks for retraining, 1 on
errors, so cron or an orchestrator can act on it.

Notes:
    The join and all metrics run in Beam, so the job scales with the runner; the report and
    the decision are written by this process afterwards from the metric rows (small).
    Each (model version, window) group is evaluated on one worker: metrics such as AUC need
    every score of the group at once.
"""

import datetime
import json
import logging
import os
import sys
import tempfile
import uuid

import apache_beam as beam
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from models import registry as model_registry
from pipelines.options import CommonOptions, build_and_run, resolve_common
from transforms import evaluation
from transforms.dead_letters import DEAD_LETTERS, WriteDeadLetters
from transforms.evaluation import ALL, METRIC_SCHEMA, METRICS
from transforms.evaluation_io import (
    ParseTruthFn,
    partition_values,
    prediction_files,
    read_prediction_file,
    read_truth_file,
    truth_files,
)
from transforms.evaluation_report import write_report
from transforms.parquet_sink import WritePartitionedParquet
from transforms.radar_rows import unpack_mask
from transforms.retraining import RETRAIN_EXIT_STATUS, decide
from transforms.slices import load_config

LOGGER = logging.getLogger(__name__)
PIPELINE_NAME = "evaluate"
EVALUATION = "evaluation"
RULES_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                         "transforms", "rules")
MODEL_NAMES = {"credit_scoring": "credit", "radar_qc": "radar_qc"}


class EvaluateOptions(PipelineOptions):
    """Options of the evaluation job (with --registry, --output, --run_id from CommonOptions)."""

    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_argument("--pipeline", dest="evaluated_pipeline", default="credit_scoring",
                            choices=sorted(MODEL_NAMES), help="whose predictions to evaluate")
        parser.add_argument("--predictions", default="out",
                            help="output root of the evaluated pipeline (holding predictions/)")
        parser.add_argument("--truth", default=None,
                            help="glob of ground-truth files (.parquet, .csv, .jsonl): "
                                 "prediction_id, label (or mask_packed + mask_shape), label_time")
        parser.add_argument("--model_versions", default=None,
                            help="comma-separated model versions to evaluate (default: all)")
        parser.add_argument("--dt_from", default=None, help="first event date, YYYY-MM-DD")
        parser.add_argument("--dt_to", default=None, help="last event date, YYYY-MM-DD")
        parser.add_argument("--window", default=None, choices=evaluation.WINDOWS,
                            help="time windows besides the whole period (default: config's)")
        parser.add_argument("--config", default=None,
                            help="evaluation config: slices, costs, drift limits (default: "
                                 "transforms/rules/evaluation_<pipeline>.json)")
        parser.add_argument("--retraining_rules", default=None,
                            help="retraining rules (default: "
                                 "transforms/rules/retraining_<pipeline>.json)")
        parser.add_argument("--decide", action="store_true", default=False,
                            help="apply the retraining rules, write a decision record and "
                                 f"exit {RETRAIN_EXIT_STATUS} if retraining is due")
        parser.add_argument("--now", default=None,
                            help="decision time, ISO-8601 (default: now; schedules use it)")


def _default_rules_file(kind: str, pipeline: str) -> str:
    return os.path.join(RULES_DIR, f"{kind}_{pipeline}.json")


def validate(options: PipelineOptions) -> tuple[CommonOptions, EvaluateOptions]:
    """Resolve defaults and check inputs exist, with messages that name the flags.

    Raises:
        ValueError: no --truth, nothing to evaluate, or an unusable date range.
    """
    common = options.view_as(CommonOptions)
    if common.run_id is None:
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
        common.run_id = f"eval-{stamp}-{uuid.uuid4().hex[:6]}"
    resolve_common(options)
    evaluate = options.view_as(EvaluateOptions)
    pipeline = evaluate.evaluated_pipeline
    common.model_name = common.model_name or MODEL_NAMES[pipeline]
    evaluate.config = evaluate.config or _default_rules_file(EVALUATION, pipeline)
    evaluate.retraining_rules = (evaluate.retraining_rules
                                 or _default_rules_file("retraining", pipeline))
    if not evaluate.truth:
        raise ValueError("give --truth, a glob of ground-truth files")
    if evaluate.dt_from and evaluate.dt_to and evaluate.dt_from > evaluate.dt_to:
        raise ValueError(f"--dt_from {evaluate.dt_from} is after --dt_to {evaluate.dt_to}")
    return common, evaluate


def model_statistics(registry: str, model_name: str, versions: list[str]) -> dict:
    """Per model version, the training statistics drift is measured against (empty if the
    version is not in the registry: drift is then skipped for it, with a warning)."""
    statistics = {}
    for version in versions:
        try:
            manifest = model_registry.resolve(registry, model_name, version, verify=False).manifest
        except model_registry.RegistryError as error:
            LOGGER.warning("no drift for %s %s: %s", model_name, version, error)
            statistics[version] = {}
            continue
        stats = {k: v for k, v in manifest.get("feature_statistics", {}).items()
                 if v.get("kind") in ("numeric", "categorical")}
        if "score_statistics" in manifest:
            stats["score"] = manifest["score_statistics"]
        statistics[version] = stats
    return statistics


class JoinFn(beam.DoFn):
    """One prediction id's co-grouped predictions and truth -> the joined row + join counts."""

    def process(self, element):
        prediction_id, grouped = element
        row, counts = evaluation.resolve_join(prediction_id, list(grouped["predictions"]),
                                              list(grouped["truth"]))
        for name, count in counts.items():
            if count:
                yield beam.pvalue.TaggedOutput("counts", (name, count))
        if row is not None:
            yield row


class GroupMetricsFn(beam.DoFn):
    """All metrics of one (model, version, window) group of joined rows."""

    def __init__(self, pipeline: str, config: dict, statistics: dict, run: dict):
        self._pipeline = pipeline
        self._config = config
        self._statistics = statistics
        self._run = run

    def process(self, element):
        key, rows = element
        # Grouped rows come in any order; sorted, sums (and so metrics) are the same to the
        # last bit on every runner.
        rows = sorted(rows, key=lambda r: r["prediction_id"])
        if self._pipeline == "radar_qc":
            figures = evaluation.radar_group_metrics(rows, self._config, unpack_mask)
        else:
            figures = evaluation.credit_group_metrics(
                rows, self._config, self._statistics.get(key[1], {}))
        yield from evaluation.keyed(figures, key, self._pipeline, self._run)


JOIN_COUNTS = ("matched", "predictions_unmatched", "truth_unmatched", "truth_duplicates",
               "prediction_duplicates")


def join_count_row(name: str, count: int, pipeline: str, run: dict) -> dict:
    """One of the join's counts as a metric row (slice "join"); zero counts have no row."""
    figure = evaluation.metric(name, count, count, "join", ALL)
    return evaluation.keyed([figure], (None, ALL, ALL, ALL), pipeline, run)[0]


def build(pipeline, options: PipelineOptions) -> dict:
    """Wire the evaluation graph.

    Returns:
        The PCollections: metrics (rows), dead_letters, metrics_files, dead_letters_files.
    """
    common, evaluate = validate(options)
    name = evaluate.evaluated_pipeline
    versions = evaluate.model_versions.split(",") if evaluate.model_versions else None
    files = prediction_files(evaluate.predictions, name, versions, evaluate.dt_from,
                             evaluate.dt_to)
    if not files:
        raise ValueError(f"no sampled predictions of {name} under "
                         f"{evaluate.predictions}/predictions/ for the given filters")
    config = load_config(evaluate.config)
    window = evaluate.window or config.get("window", "week")
    found_versions = sorted({partition_values(p)["model_version"] for p in files})
    statistics = (model_statistics(common.registry, common.model_name, found_versions)
                  if name == "credit_scoring" else {})
    run = {"run_id": common.run_id, "evaluated_at": datetime.datetime.now(datetime.UTC)}
    LOGGER.info("evaluating %d prediction files of %s (versions %s)", len(files), name,
                ", ".join(found_versions))

    predictions = (pipeline
                   | "PredictionFiles" >> beam.Create(files)
                   | "SpreadPredictionFiles" >> beam.Reshuffle()
                   | "ReadPredictions" >> beam.FlatMap(read_prediction_file))
    truth = (pipeline
             | "TruthFiles" >> beam.Create(truth_files(evaluate.truth))
             | "SpreadTruthFiles" >> beam.Reshuffle()
             | "ReadTruth" >> beam.FlatMap(read_truth_file)
             | "ParseTruth" >> beam.ParDo(ParseTruthFn(PIPELINE_NAME, common.run_id))
             .with_outputs(DEAD_LETTERS, main="rows"))
    joined = (
        {"predictions": predictions | "KeyPredictions" >> beam.Map(
            lambda r: (r["prediction_id"], r)),
         "truth": truth.rows | "KeyTruth" >> beam.Map(lambda r: (r["prediction_id"], r))}
        | "JoinOnPredictionId" >> beam.CoGroupByKey()
        | "ResolveJoin" >> beam.ParDo(JoinFn()).with_outputs("counts", main="rows"))
    counts = (joined.counts
              | "SumJoinCounts" >> beam.CombinePerKey(sum)
              | "JoinCountRows" >> beam.Map(lambda kv: join_count_row(*kv, name, run)))
    group_metrics = (joined.rows
                     | "KeyByVersionAndWindow" >> beam.FlatMap(
                         lambda r: [(k, r) for k in evaluation.group_keys(r, window)])
                     | "GroupForMetrics" >> beam.GroupByKey()
                     | "ComputeMetrics" >> beam.ParDo(GroupMetricsFn(
                         name, config, statistics, run)))
    metrics = (counts, group_metrics) | "AllMetrics" >> beam.Flatten()
    base = f"{common.output.rstrip('/')}/{EVALUATION}/{METRICS}"
    return {
        "metrics": metrics,
        "dead_letters": truth[DEAD_LETTERS],
        "metrics_files": metrics | "WriteMetrics" >> WritePartitionedParquet(
            base=base, schema=METRIC_SCHEMA, partition_columns=("pipeline",),
            file_prefix=common.run_id, sort_field="metric", num_shards=common.num_shards),
        "dead_letters_files": truth[DEAD_LETTERS] | "WriteDeadLetters" >> WriteDeadLetters(
            common.output, common.run_id),
    }


def read_metric_rows(output: str, pipeline: str) -> list[dict]:
    """Every metric row written so far for a pipeline (history of all evaluation runs)."""
    pattern = FileSystems.join(output, EVALUATION, METRICS, f"pipeline={pipeline}",
                               "*.parquet")
    rows = []
    for path in _matching(pattern):
        with FileSystems.open(path) as f:
            rows.extend(dict(r, pipeline=pipeline) for r in pq.read_table(f).to_pylist())
    return rows


def _matching(pattern: str) -> list[str]:
    try:
        return sorted(m.path for m in FileSystems.match([pattern])[0].metadata_list)
    except Exception:  # noqa: BLE001 - a missing folder matches nothing
        return []


def _write_text(path: str, text: str) -> None:
    with FileSystems.create(path) as f:
        f.write(text.encode("utf-8"))


def previous_decision(directory: str) -> dict | None:
    """The newest decision record in a folder (names start with the decision time)."""
    paths = _matching(FileSystems.join(directory, "*.json"))
    if not paths:
        return None
    with FileSystems.open(paths[-1]) as f:
        return json.loads(f.read().decode("utf-8"))


def publish_report(directory: str, *args) -> str:
    """``write_report`` into ``directory``, on any Beam filesystem: rendered in a local
    temporary folder first when ``directory`` is remote (matplotlib writes local files)."""
    if "://" not in directory:
        return write_report(directory, *args)
    with tempfile.TemporaryDirectory() as local:
        write_report(local, *args)
        for name in sorted(os.listdir(local)):
            with open(os.path.join(local, name), "rb") as source, \
                    FileSystems.create(FileSystems.join(directory, name)) as sink:
                sink.write(source.read())
    return FileSystems.join(directory, "index.html")


def mask_examples(rows: list[dict], predictions_root: str, truth_pattern: str,
                  count: int = 3) -> list:
    """Truth and predicted masks of the worst few labelled sweeps (lowest CSI), for the report."""
    sweeps = sorted((r for r in rows if r["slice"] == "sweep" and r["metric"] == "csi"
                     and r["window"] == ALL and r["value"] is not None),
                    key=lambda r: r["value"])[:count]
    wanted = {r["slice_value"] for r in sweeps}
    if not wanted:
        return []
    predicted, truth = {}, {}
    for path in prediction_files(predictions_root, "radar_qc"):
        for row in read_prediction_file(path):
            if row["prediction_id"] in wanted:
                predicted[row["prediction_id"]] = unpack_mask(row["mask_packed"],
                                                              row["mask_shape"])
    for path in truth_files(truth_pattern):
        for _, raw in read_truth_file(path):
            try:
                record = evaluation.truth_record(raw)
            except (evaluation.TruthError, AttributeError):
                continue
            if record["prediction_id"] in wanted and "truth_mask_packed" in record:
                truth[record["prediction_id"]] = unpack_mask(record["truth_mask_packed"],
                                                             record["truth_mask_shape"])
    return [(pid, truth[pid], predicted[pid]) for pid in sorted(wanted)
            if pid in truth and pid in predicted]


def finish(common: CommonOptions, evaluate: EvaluateOptions, now: datetime.datetime) -> dict:
    """After the Beam job: the decision (if asked), the JSON of this run and the report."""
    name = evaluate.evaluated_pipeline
    output = common.output.rstrip("/")
    history = read_metric_rows(output, name)
    rows = [r for r in history if r["evaluation_run_id"] == common.run_id]
    if not rows:
        raise RuntimeError(f"evaluation run {common.run_id} wrote no metric rows")
    join = {name: 0 for name in JOIN_COUNTS}
    join.update({r["metric"]: int(r["value"]) for r in rows if r["slice"] == "join"})
    summary = {
        "pipeline": name, "evaluation_run_id": common.run_id, "evaluated_at": now.isoformat(),
        "predictions": evaluate.predictions, "truth": evaluate.truth,
        "filters": {"model_versions": evaluate.model_versions, "dt_from": evaluate.dt_from,
                    "dt_to": evaluate.dt_to},
        "config": evaluate.config, "join": join,
    }
    decision = None
    if evaluate.decide:
        with open(evaluate.retraining_rules, encoding="utf-8") as f:
            rules = json.load(f)
        decisions_dir = FileSystems.join(output, EVALUATION, "decisions", f"pipeline={name}")
        version = max(r["model_version"] for r in rows if r["model_version"] != ALL)
        manifest = model_registry.resolve(common.registry, common.model_name, version,
                                          verify=False).manifest
        decision = decide(rows, rules, manifest.get("holdout_metrics", {}), now,
                          previous_decision(decisions_dir), common.registry,
                          manifest.get("holdout_slices"))
        stamp = now.strftime("%Y%m%dT%H%M%SZ")
        _write_text(FileSystems.join(decisions_dir, f"{stamp}-{common.run_id}.json"),
                    json.dumps(decision, indent=2, default=str))
    examples = (mask_examples(rows, evaluate.predictions, evaluate.truth)
                if name == "radar_qc" else [])
    report_dir = FileSystems.join(output, EVALUATION, "reports", name, common.run_id)
    report = publish_report(report_dir, summary, rows, history, decision, examples)
    latest = {**summary, "report": report, "decision": decision,
              "metrics": [{k: v for k, v in r.items() if k not in ("evaluated_at",)}
                          for r in rows]}
    _write_text(FileSystems.join(output, EVALUATION, f"latest_{name}.json"),
                json.dumps(latest, indent=2, default=str))
    return {"report": report, "decision": decision, "summary": summary, "rows": rows}


def run(argv=None, test_pipeline=None) -> dict:
    """Parse options, run the Beam job, then decide and report.

    Returns:
        {"report": html path, "decision": record or None, "summary": ..., "rows": metric rows}
    """
    result, options = build_and_run(argv, test_pipeline, __doc__.split("\n")[0],
                                    EvaluateOptions, build)
    common = options.view_as(CommonOptions)
    evaluate = options.view_as(EvaluateOptions)
    now = (evaluation.parse_time(evaluate.now) if evaluate.now
           else datetime.datetime.now(datetime.UTC))
    outcome = finish(common, evaluate, now)
    join = outcome["summary"]["join"]
    print(f"evaluate {evaluate.evaluated_pipeline} run {common.run_id}: {result.state}\n"
          f"  joined {join.get('matched', 0)} predictions with truth; unmatched: "
          f"{join.get('predictions_unmatched', 0)} predictions, {join.get('truth_unmatched', 0)}"
          f" truth rows; {join.get('truth_duplicates', 0)} duplicate truth rows (last "
          f"label_time kept)\n"
          f"  metrics: {common.output.rstrip('/')}/{EVALUATION}/{METRICS}/"
          f"pipeline={evaluate.evaluated_pipeline}/\n"
          f"  report:  {outcome['report']}")
    decision = outcome["decision"]
    if decision is not None:
        print(f"  decision: {'RETRAIN' if decision['retrain'] else 'no retraining'} "
              f"({decision['reason']})" + (f"\n  retrain with: {decision['command']}"
                                            if decision["retrain"] else "")
              + (f"\n  alerts for a person: {', '.join(decision['alerts'])}"
                 if decision["alerts"] else ""))
    return outcome


def main(argv=None) -> int:
    """The CLI: exit status 3 when the decision is to retrain."""
    outcome = run(argv)
    decision = outcome["decision"]
    return RETRAIN_EXIT_STATUS if decision and decision["retrain"] else 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    sys.exit(main())
