"""What follows an evaluation's Beam job: the retraining decision, the report and the latest
summary, written from the run's metric rows (small) through Beam's FileSystems, so gs:// outputs
work as local ones."""

import dataclasses
import datetime
import json
import os
import tempfile

import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from models import registry as model_registry
from models.credit.snapshots import write_manifest
from models.radar_qc.vocabulary import unpack_mask
from transforms.evaluation.join import (
    ALL,
    JOIN_COUNTS,
    METRICS,
    TruthError,
    served_rows,
    truth_record,
)
from transforms.evaluation.reading import (
    prediction_files,
    read_prediction_file,
    read_truth_file,
    truth_files,
)
from transforms.evaluation.report import write_report
from transforms.evaluation.retraining import decide

EVALUATION = "evaluation"


@dataclasses.dataclass(frozen=True)
class EvaluationRun:
    """One evaluation run's settings, as the post-job work needs them.

    Attributes:
        pipeline: the evaluated pipeline.
        model_name: the evaluated model.
        run_id: this evaluation's run id.
        output: output root (``evaluation/`` goes under it).
        registry: model registry root.
        predictions: the evaluated pipeline's output root.
        truth: glob of the ground-truth files.
        filters: model versions and date bounds the run was restricted to.
        config: the evaluation configuration file.
        retraining_rules: the parsed retraining rules, or None without --decide.
        history_metrics: the metrics charted over time in the report.
        mask_examples: whether the report shows truth vs predicted masks (radar).
        snapshot_id: the training snapshot the Beam job wrote, or None.
    """

    pipeline: str
    model_name: str
    run_id: str
    output: str
    registry: str
    predictions: str
    truth: str
    filters: dict
    config: str
    retraining_rules: dict | None
    history_metrics: tuple[str, ...]
    mask_examples: bool = False
    snapshot_id: str | None = None


def read_metric_rows(output: str, pipeline: str, model_name: str) -> list[dict]:
    """Every metric row written so far for a pipeline's model (history of all runs)."""
    pattern = FileSystems.join(output, EVALUATION, METRICS, f"pipeline={pipeline}",
                               f"model_name={model_name}", "*.parquet")
    rows = []
    for path in _matching(pattern):
        with FileSystems.open(path) as f:
            rows.extend(dict(r, pipeline=pipeline, model_name=model_name)
                        for r in pq.read_table(f).to_pylist())
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


def publish_report(directory: str, *args, **kwargs) -> str:
    """``write_report`` into ``directory``, on any Beam filesystem: rendered in a local
    temporary folder first when ``directory`` is remote (matplotlib writes local files)."""
    if "://" not in directory:
        return write_report(directory, *args, **kwargs)
    with tempfile.TemporaryDirectory() as local:
        write_report(local, *args, **kwargs)
        for name in sorted(os.listdir(local)):
            with open(os.path.join(local, name), "rb") as source, \
                    FileSystems.create(FileSystems.join(directory, name)) as sink:
                sink.write(source.read())
    return FileSystems.join(directory, "index.html")


def latest_reference(output: str, run: EvaluationRun) -> dict | None:
    """The newest comparison of the same model with reference algorithms on real volumes
    (``pipelines.radar_reference`` writes it beside the evaluation reports), for the report:
    {"link": relative path of its page, **its summary.json}; None when there is none."""
    folder = os.path.join(output, EVALUATION, "reports", run.pipeline, run.model_name)
    if "://" in output or not os.path.isdir(folder):
        return None
    found = [os.path.join(folder, name, "summary.json") for name in os.listdir(folder)
             if name.startswith("reference-")]
    found = [path for path in found if os.path.exists(path)]
    if not found:
        return None
    newest = max(found, key=os.path.getmtime)
    with open(newest, encoding="utf-8") as handle:
        summary = json.load(handle)
    return {**summary, "link": f"../{os.path.basename(os.path.dirname(newest))}/index.html"}


def mask_examples(rows: list[dict], run: EvaluationRun, count: int = 3) -> list:
    """Truth and predicted masks of the worst few labelled sweeps (lowest CSI), for the report."""
    sweeps = sorted((r for r in rows if r["slice"] == "sweep" and r["metric"] == "csi"
                     and r["window"] == ALL and r["value"] is not None),
                    key=lambda r: r["value"])[:count]
    wanted = {r["slice_value"] for r in sweeps}
    if not wanted:
        return []
    predicted, truth = {}, {}
    for path in prediction_files(run.predictions, run.pipeline, run.model_name):
        for row in read_prediction_file(path):
            if row["prediction_id"] in wanted:
                predicted[row["prediction_id"]] = unpack_mask(row["mask_packed"],
                                                              row["mask_shape"])
    for path in truth_files(run.truth):
        for _, raw in read_truth_file(path):
            try:
                record = truth_record(raw)
            except (TruthError, AttributeError):
                continue
            if record["prediction_id"] in wanted and "truth_mask_packed" in record:
                truth[record["prediction_id"]] = unpack_mask(record["truth_mask_packed"],
                                                             record["truth_mask_shape"])
    return [(pid, truth[pid], predicted[pid]) for pid in sorted(wanted)
            if pid in truth and pid in predicted]


def finish(run: EvaluationRun, now: datetime.datetime) -> dict:
    """After the Beam job: the decision (if asked), the JSON of this run and the report.

    Returns:
        {"report": html path, "decision": record or None, "summary": ..., "rows": metric rows}
    """
    output = run.output.rstrip("/")
    history = read_metric_rows(output, run.pipeline, run.model_name)
    rows = [r for r in history if r["evaluation_run_id"] == run.run_id]
    if not rows:
        raise RuntimeError(f"evaluation run {run.run_id} wrote no metric rows")
    join = {name: 0 for name in JOIN_COUNTS}
    join.update({r["metric"]: int(r["value"]) for r in rows if r["slice"] == "join"})
    summary = {
        "pipeline": run.pipeline, "model_name": run.model_name,
        "evaluation_run_id": run.run_id, "evaluated_at": now.isoformat(),
        "predictions": run.predictions, "truth": run.truth, "filters": run.filters,
        "config": run.config, "join": join,
    }
    snapshot = (write_manifest(run.registry, run.model_name, run.snapshot_id, run.run_id,
                               join["predictions_unmatched"]) if run.snapshot_id else None)
    summary["snapshot"] = {k: snapshot[k] for k in (
        "snapshot_id", "rows", "event_time_range", "sampled_predictions_without_label")} \
        if snapshot else None
    decision = None
    folder = f"pipeline={run.pipeline}/model_name={run.model_name}"
    if run.retraining_rules is not None:
        decisions_dir = FileSystems.join(output, EVALUATION, "decisions", folder)
        version = max(r["model_version"] for r in served_rows(rows) if r["model_version"] != ALL)
        manifest = model_registry.resolve(run.registry, run.model_name, version,
                                          verify=False).manifest
        decision = decide(rows, run.retraining_rules, manifest.get("holdout_metrics", {}), now,
                          previous_decision(decisions_dir), run.registry,
                          manifest.get("holdout_slices"), manifest.get("training_command"))
        if snapshot:
            # Train on the snapshot, holding out the newest window for challenger vs champion.
            decision["snapshot"] = snapshot["snapshot_id"]
            decision["command"] += (f" --snapshot {snapshot['snapshot_id']}"
                                    + (f" --until {decision['window_start']}"
                                       if decision["window_start"] != ALL else ""))
        stamp = now.strftime("%Y%m%dT%H%M%SZ")
        _write_text(FileSystems.join(decisions_dir, f"{stamp}-{run.run_id}.json"),
                    json.dumps(decision, indent=2, default=str))
    examples = mask_examples(rows, run) if run.mask_examples and run.truth else []
    report_dir = FileSystems.join(output, EVALUATION, "reports", run.pipeline, run.model_name,
                                  run.run_id)
    report = publish_report(report_dir, summary, rows, history, decision, examples,
                            history_metrics=run.history_metrics,
                            reference=latest_reference(output, run))
    latest = {**summary, "report": report, "decision": decision,
              "metrics": [{k: v for k, v in r.items() if k not in ("evaluated_at",)}
                          for r in rows]}
    _write_text(FileSystems.join(output, EVALUATION, f"latest_{run.pipeline}_{run.model_name}"
                                                     f".json"),
                json.dumps(latest, indent=2, default=str))
    return {"report": report, "decision": decision, "summary": summary, "rows": rows}
