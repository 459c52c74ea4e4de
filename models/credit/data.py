"""Reading the UCI German credit file (whitespace separated, no header, 21 columns)."""

import numpy as np

from models.credit.schema import FIELDS, NUMERIC_FIELDS

LABEL_GOOD, LABEL_BAD = 1, 2


def parse_german_line(line: str) -> tuple[dict, int]:
    """One line of german.data -> (raw applicant fields, label 1 good / 2 bad).

    Raises:
        ValueError: the line does not have 21 columns or a number does not parse.
    """
    parts = line.split()
    if len(parts) != len(FIELDS) + 1:
        raise ValueError(f"expected {len(FIELDS) + 1} columns, got {len(parts)}: {line!r}")
    record = {}
    for field, value in zip(FIELDS, parts):
        record[field.name] = float(value) if field.name in NUMERIC_FIELDS else value
    return record, int(parts[-1])


def load_german(path: str) -> tuple[list[dict], np.ndarray]:
    """All applicants of german.data and their labels as 1 = good risk, 0 = bad risk."""
    records, labels = [], []
    with open(path, encoding="ascii") as f:
        for line in f:
            if line.strip():
                record, label = parse_german_line(line)
                records.append(record)
                labels.append(1 if label == LABEL_GOOD else 0)
    return records, np.asarray(labels, dtype=np.int64)
