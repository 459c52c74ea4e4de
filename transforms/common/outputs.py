"""The three outputs every pipeline run writes: its primary dataset, the sampled predictions and
the dead letters, all Hive-partitioned Parquet under one output root."""

import dataclasses
import errno
import os
import re

import pyarrow as pa

from transforms.common.dead_letters import WriteDeadLetters
from transforms.common.parquet_sink import DEFAULT_MAX_ROWS_PER_FILE, WritePartitionedParquet
from transforms.common.predictions import WriteSampledPredictions


@dataclasses.dataclass(frozen=True)
class RunOutputs:
    """Where and how a run writes.

    Attributes:
        output: the output root.
        run_id: prefix of every file name.
        model_name: the served model (a partition level of every dataset).
        sample_rate: share of predictions kept in the sample.
        window_secs: 0 in batch; the file window in streaming.
        max_rows_per_file: rows after which a file is closed and the next one started.
    """

    output: str
    run_id: str
    model_name: str
    sample_rate: float
    window_secs: int = 0
    max_rows_per_file: int = DEFAULT_MAX_ROWS_PER_FILE


@dataclasses.dataclass(frozen=True)
class PrimaryDataset:
    """A pipeline's own output dataset (responses, QC'd volume index ...).

    Attributes:
        name: folder under the output root, and the step label's suffix (CamelCase).
        label: unique, stable step label of its sink.
        schema: row schema, partition columns included.
        partitions: partition columns, in folder order.
    """

    name: str
    label: str
    schema: pa.Schema
    partitions: tuple[str, ...]


def write_run_outputs(run: RunOutputs, primary: PrimaryDataset, primary_rows, predictions,
                      prediction_schema: pa.Schema, dead_letters) -> dict:
    """Wire the three sinks; returns the written file paths as ``<name>_files`` PCollections
    (``<primary.name>_files``, ``predictions_files``, ``dead_letters_files``)."""
    output = run.output.rstrip("/")
    return {
        f"{primary.name}_files": primary_rows | primary.label >> WritePartitionedParquet(
            base=f"{output}/{primary.name}", schema=primary.schema,
            partition_columns=primary.partitions, file_prefix=run.run_id,
            max_rows_per_file=run.max_rows_per_file, window_secs=run.window_secs),
        "predictions_files": predictions | "WritePredictions" >> WriteSampledPredictions(
            output, prediction_schema, run.sample_rate, run.run_id, run.window_secs,
            run.max_rows_per_file),
        "dead_letters_files": dead_letters | "WriteDeadLetters" >> WriteDeadLetters(
            output, run.run_id, run.model_name, run.window_secs),
    }


# What the operating system says when outputs cannot be written, as errno names and as the
# text Beam's runners keep when they re-raise a worker's error as another class.
_OUTPUT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES}
_OUTPUT_TEXTS = tuple(f"[Errno {n}]" for n in _OUTPUT_ERRNOS)


def is_output_failure(error: BaseException) -> bool:
    """Whether a run failed because its outputs could not be written."""
    seen = error
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in _OUTPUT_ERRNOS:
            return True
        if any(text in str(seen) for text in _OUTPUT_TEXTS):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def output_failure(error: BaseException) -> str:
    """The operating system's reason for a failed write, found in an exception chain that
    Beam's filesystems and runners wrap (an errno, or its ``[Errno N]`` text), else the first
    line of the message."""
    seen = error
    while seen is not None:
        number = seen.errno if isinstance(seen, OSError) and seen.errno else None
        found = re.search(r"\[Errno (\d+)\]", str(seen))
        number = number or (int(found.group(1)) if found else None)
        if number:
            return f"{os.strerror(number)} ({errno.errorcode.get(number, number)})"
        seen = seen.__cause__ or seen.__context__
    return str(error).splitlines()[0] if str(error) else type(error).__name__
