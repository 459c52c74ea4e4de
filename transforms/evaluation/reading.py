"""Reading what evaluation joins: sampled predictions (Hive-partitioned Parquet) and ground
truth (Parquet, CSV or JSON Lines), as plain dict rows.

Partition values live only in folder names (``pipeline=…/model_name=…/model_version=…/dt=…``),
so they are parsed from each file's path and filtered before any file is opened.
"""

import csv
import io
import json

import apache_beam as beam
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from transforms.common.dead_letters import dead_letter
from transforms.common.predictions import PARTITION_COLUMNS, PREDICTIONS
from transforms.evaluation.join import TruthError, truth_record

TRUTH_FORMATS = (".parquet", ".csv", ".jsonl", ".json")


def partition_values(path: str) -> dict:
    """``{"pipeline": …, "model_name": …, "model_version": …, "dt": …}`` from a Hive-style
    path."""
    values = {}
    for part in path.replace("\\", "/").split("/"):
        if "=" in part:
            key, value = part.split("=", 1)
            values[key] = value
    return values


def prediction_files(root: str, pipeline: str, model_name: str, model_versions=None,
                     dt_from=None, dt_to=None) -> list[str]:
    """Parquet files of one pipeline's sampled predictions of one model, filtered on their
    partitions.

    Args:
        root: a pipeline run's output root (holding ``predictions/``).
        pipeline: e.g. "credit_scoring".
        model_name: e.g. "credit_german".
        model_versions: keep only these versions (None = all).
        dt_from, dt_to: inclusive YYYY-MM-DD bounds of the event date (None = open).
    """
    pattern = FileSystems.join(root, PREDICTIONS, f"pipeline={pipeline}",
                               f"model_name={model_name}", "model_version=*", "dt=*",
                               "*.parquet")
    try:
        paths = [m.path for m in FileSystems.match([pattern])[0].metadata_list]
    except Exception:  # noqa: BLE001 - nothing there matches nothing
        return []
    kept = []
    for path in sorted(paths):
        values = partition_values(path)
        if model_versions and values.get("model_version") not in model_versions:
            continue
        if dt_from and values.get("dt", "") < dt_from:
            continue
        if dt_to and values.get("dt", "") > dt_to:
            continue
        kept.append(path)
    return kept


def read_prediction_file(path: str):
    """Every row of one sampled-prediction file, partition columns added back."""
    with FileSystems.open(path) as f:
        table = pq.read_table(f)
    values = partition_values(path)
    for row in table.to_pylist():
        row.update({k: values[k] for k in PARTITION_COLUMNS if k in values})
        yield row


def truth_files(pattern: str) -> list[str]:
    """Files matching a glob; ValueError if none or if one has an unknown format."""
    try:
        paths = sorted(m.path for m in FileSystems.match([pattern])[0].metadata_list)
    except Exception:  # noqa: BLE001 - a missing folder matches nothing
        paths = []
    if not paths:
        raise ValueError(f"--truth {pattern!r} matches no file")
    unknown = [p for p in paths if not p.endswith(TRUTH_FORMATS)]
    if unknown:
        raise ValueError(f"ground truth must be one of {', '.join(TRUTH_FORMATS)}: {unknown}")
    return paths


def read_truth_file(path: str):
    """(origin, raw dict or undecodable text) for every record of a truth file."""
    with FileSystems.open(path) as f:
        data = f.read()
    if path.endswith(".parquet"):
        for number, row in enumerate(pq.read_table(io.BytesIO(data)).to_pylist(), start=1):
            yield f"{path}:{number}", row
    elif path.endswith(".csv"):
        reader = csv.DictReader(io.StringIO(data.decode("utf-8")))
        for number, row in enumerate(reader, start=2):  # line 1 is the header
            yield f"{path}:{number}", row
    else:
        for number, line in enumerate(data.decode("utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                row = line
            yield f"{path}:{number}", row


class ParseTruthFn(beam.DoFn):
    """Checked truth rows on the main output; anything unusable as a dead letter (stage truth)."""

    def __init__(self, pipeline: str, run_id: str):
        self._pipeline = pipeline
        self._run_id = run_id

    def process(self, element):
        origin, raw = element
        try:
            if not isinstance(raw, dict):
                raise TruthError(f"not a JSON object: {str(raw)[:80]!r}")
            yield truth_record(raw)
        except TruthError as error:
            text = raw if isinstance(raw, str) else json.dumps(raw, default=str, sort_keys=True)
            yield beam.pvalue.TaggedOutput("dead_letters", dead_letter(
                pipeline=self._pipeline, stage="truth", error=error, raw=text, origin=origin,
                run_id=self._run_id))
