"""A credit data set described by configuration: its file, fields, label, slices and costs.

One ``<config>/datasets/<model name>.json`` file drives the training file reader, request
validation, the model's inputs and the Parquet columns, so they cannot drift apart, and a bank
brings its own applicants by writing such a file instead of code. Training writes the data set
into the model manifest (``Dataset.to_dict``); serving, evaluation and explain read it back from
the manifest of the version they use (``Dataset.from_dict``), so every version keeps its own
schema.

The file (JSON)::

    {
      "version": "2026.11.1",
      "model_name": "credit_german",            # registry name of models trained on it
      "description": "...",
      "data": "../shared/data/credit/german.data",   # default training file (relative to
                                                      # the project root)
      "file": {"format": "csv",                 # csv or parquet
               "delimiter": "whitespace",       # or ",", ";", "\\t" ...
               "header": false,                 # csv: first line names the columns
               "columns": ["checking_status", ..., "label"],   # csv without header
               "missing_values": ["N/A", "?"]}, # cells read as missing
      "fields": [                               # the model's inputs, in order
        {"name": "duration_months", "kind": "numeric", "min": 1, "max": 120,
         "missing": "reject", "description": "..."},
        {"name": "purpose", "kind": "categorical", "max_code_length": 16,
         "missing": "impute"}
      ],
      "label": {"column": "label", "good": "1", "bad": "2"},
      "id_column": null, "event_time_column": null,
      "protected_attributes": ["personal_status_sex", "age_years"],
      "costs": {"bad_approved": 5, "good_declined": 1},   # optional
      "decision_threshold": null,               # optional; default from costs, else 0.5
      "pass_through": [                         # optional: request fields that are not model
        {"name": "national_id", "treatment": "pseudonymise"},   # inputs (personal data)
        {"name": "applicant_name", "treatment": "drop"}
      ],
      "privacy": {"key": "env:BEAMLINE_PII_KEY", # or "file:/path"; needed to pseudonymise
                  "unparsed_dead_letters": "hash"}   # or "keep" (the default)
    }

Personal data: a request may carry fields that are not model inputs (names, national ids,
phone numbers) when the data set declares them as ``pass_through`` with a treatment: ``drop``
(never stored) or ``pseudonymise`` (stored as a keyed HMAC-SHA256, the same value giving the
same pseudonym, so it can still be joined on or sliced by). The key comes from an environment
variable or a file named by ``privacy.key``, never from the configuration, the repository or
an output. A model input cannot be personal data to hide: the model, the training snapshots,
drift and replay need inputs as they were, so declaring one is a configuration error.
``unparsed_dead_letters: "hash"`` keeps only the length and a keyed hash of a dead-lettered
line that is not a JSON object (its content cannot be redacted field by field).

Missing values: a field with ``"missing": "impute"`` may be absent or null in a request and
missing in the training file; the model imputes it inside (numbers: the training mean plus a
missing indicator; codes: a category of their own, ``MISSING_CODE``). A field with
``"missing": "reject"`` must be present: a request without it is rejected and a training row
without it is left out (and counted).
"""

import csv
import dataclasses
import io
import math
import pathlib

import numpy as np

from models.config import (
    ConfigError,
    default_path,
    parse_config,
    read_config,
    search_note,
    user_config_dir,
)
from models.provenance import PROJECT_ROOT

NUMERIC, CATEGORICAL = "numeric", "categorical"
IMPUTE, REJECT = "impute", "reject"
# How a missing category code reaches the model (a string input cannot carry None).
MISSING_CODE = ""
DEFAULT_MAX_CODE_LENGTH = 16
# Names a request already uses for itself; a field may not take them.
REQUEST_COLUMNS = ("request_id", "event_time")
DROP, PSEUDONYMISE = "drop", "pseudonymise"
KEEP, HASH = "keep", "hash"


class DataError(ValueError):
    """A data file row that cannot be read as the configuration describes."""


@dataclasses.dataclass(frozen=True)
class Field:
    """One input field as the model sees it.

    Attributes:
        name: column / request field / model input name.
        kind: "numeric" or "categorical".
        description: what the field means.
        min_value: smallest accepted number (numeric; None = unbounded).
        max_value: largest accepted number (numeric; None = unbounded).
        max_code_length: longest accepted code (categorical).
        missing: "reject" (must be present) or "impute" (may be missing).
    """

    name: str
    kind: str
    description: str = ""
    min_value: float | None = None
    max_value: float | None = None
    max_code_length: int = DEFAULT_MAX_CODE_LENGTH
    missing: str = REJECT

    @property
    def may_be_missing(self) -> bool:
        return self.missing == IMPUTE

    def to_dict(self) -> dict:
        return {"name": self.name, "kind": self.kind, "description": self.description,
                "min": self.min_value, "max": self.max_value,
                "max_code_length": self.max_code_length, "missing": self.missing,
                "dtype": "string" if self.kind == CATEGORICAL else "float32"}


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A credit data set's configuration, checked. See the module docstring for the file."""

    model_name: str
    version: str
    fields: tuple[Field, ...]
    label_column: str
    good_label: str
    bad_labels: tuple[str, ...] = ()
    file: dict = dataclasses.field(default_factory=dict)
    data: str | None = None
    description: str = ""
    id_column: str | None = None
    event_time_column: str | None = None
    protected_attributes: tuple[str, ...] = ()
    costs: dict | None = None
    threshold: float | None = None
    pass_through: tuple[tuple[str, str], ...] = ()
    privacy_key: str | None = None
    unparsed_dead_letters: str = KEEP

    @property
    def field_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields)

    @property
    def pseudonymised(self) -> tuple[str, ...]:
        """Pass-through fields stored as pseudonyms (string columns after the inputs)."""
        return tuple(name for name, treatment in self.pass_through if treatment == PSEUDONYMISE)

    @property
    def stored_kinds(self) -> dict[str, str]:
        """``{column: kind}`` of every applicant column a sampled prediction keeps: the model
        inputs, then the pseudonymised pass-through fields (codes; slices group by them)."""
        return {**self.kinds, **{name: CATEGORICAL for name in self.pseudonymised}}

    @property
    def by_name(self) -> dict[str, Field]:
        return {f.name: f for f in self.fields}

    @property
    def kinds(self) -> dict[str, str]:
        """``{field: kind}`` in the data set's order."""
        return {f.name: f.kind for f in self.fields}

    @property
    def decision_threshold(self) -> float:
        """Approve iff p(good) >= this: the configured threshold, else the break-even point of
        the costs (approving a bad risk costs ``bad_approved``, declining a good one
        ``good_declined``: approve iff p * good_declined > (1 - p) * bad_approved), else 0.5."""
        if self.threshold is not None:
            return self.threshold
        if self.costs:
            bad, good = self.costs["bad_approved"], self.costs["good_declined"]
            return bad / (bad + good)
        return 0.5

    def to_dict(self) -> dict:
        """The form kept in the model manifest (``from_dict`` reads it back)."""
        return {
            "model_name": self.model_name, "version": self.version,
            "description": self.description, "data": self.data, "file": self.file,
            "fields": [f.to_dict() for f in self.fields],
            "label": {"column": self.label_column, "good": self.good_label,
                      "bad": list(self.bad_labels)},
            "id_column": self.id_column, "event_time_column": self.event_time_column,
            "protected_attributes": list(self.protected_attributes),
            "costs": self.costs, "decision_threshold": self.threshold,
            "effective_decision_threshold": self.decision_threshold,
            "pass_through": [{"name": n, "treatment": t} for n, t in self.pass_through],
            "privacy": {"key": self.privacy_key,
                        "unparsed_dead_letters": self.unparsed_dead_letters},
        }

    @classmethod
    def from_dict(cls, content: dict, version: str | None = None,
                  path: str = "<dataset>") -> "Dataset":
        """A data set from its configuration content (a file's or a manifest's).

        Raises:
            ConfigError: naming the file and what is wrong.
        """
        return _build(content, version or content.get("version", "unversioned"), path)


def _number(value, what: str, path: str):
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or \
            not math.isfinite(value):
        raise ConfigError(f"{path}: {what} must be a finite number, got {value!r}")
    return float(value)


def _field(spec, path: str) -> Field:
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str) or \
            not spec["name"].strip():
        raise ConfigError(f"{path}: every field needs a name: {spec!r}")
    name = spec["name"]
    kind = spec.get("kind")
    if kind not in (NUMERIC, CATEGORICAL):
        raise ConfigError(f"{path}: field {name!r}: kind must be numeric or categorical, "
                          f"got {kind!r}")
    missing = spec.get("missing", REJECT)
    if missing not in (REJECT, IMPUTE):
        raise ConfigError(f"{path}: field {name!r}: missing must be reject or impute, "
                          f"got {missing!r}")
    low = _number(spec.get("min"), f"field {name!r} min", path)
    high = _number(spec.get("max"), f"field {name!r} max", path)
    if low is not None and high is not None and low > high:
        raise ConfigError(f"{path}: field {name!r}: min {low:g} exceeds max {high:g}")
    if spec.get("pii") or spec.get("treatment"):
        raise ConfigError(_INPUT_IS_PII.format(path=path, name=name))
    length = spec.get("max_code_length", DEFAULT_MAX_CODE_LENGTH)
    if not isinstance(length, int) or length < 1:
        raise ConfigError(f"{path}: field {name!r}: max_code_length must be a positive integer")
    if kind == CATEGORICAL and (low is not None or high is not None):
        raise ConfigError(f"{path}: field {name!r} is categorical; min/max fit numeric fields")
    return Field(name=name, kind=kind, description=str(spec.get("description", "")),
                 min_value=low, max_value=high, max_code_length=length, missing=missing)


_INPUT_IS_PII = ("{path}: field {name!r} is a model input and cannot be dropped or "
                 "pseudonymised: the model, training snapshots, drift and replay need inputs as "
                 "they were. Personal data the model does not need belongs in \"pass_through\"; "
                 "personal data it needs cannot be hidden from it")


def _pass_through(content: dict, names: list[str], label: str, path: str):
    """(pass-through (name, treatment) pairs, key source, unparsed dead-letter policy)."""
    specs = content.get("pass_through") or []
    if not isinstance(specs, list):
        raise ConfigError(f"{path}: pass_through must be a list of {{name, treatment}}")
    pairs = []
    for spec in specs:
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str) or \
                spec.get("treatment") not in (DROP, PSEUDONYMISE):
            raise ConfigError(f"{path}: a pass-through field needs a name and a treatment, "
                              f"drop or pseudonymise: {spec!r}")
        name = spec["name"]
        if name in names:
            raise ConfigError(_INPUT_IS_PII.format(path=path, name=name))
        if name in REQUEST_COLUMNS or name == label or name in dict(pairs):
            raise ConfigError(f"{path}: pass-through field {name!r} names the request id, "
                              f"event time, label or another pass-through field")
        pairs.append((name, spec["treatment"]))
    privacy = content.get("privacy") or {}
    key = privacy.get("key")
    if key is not None and (not isinstance(key, str) or not key.startswith(("env:", "file:"))
                            or not key.partition(":")[2]):
        raise ConfigError(f"{path}: privacy.key names where the key is, \"env:VARIABLE\" or "
                          f"\"file:/path\", never the key itself")
    unparsed = privacy.get("unparsed_dead_letters", KEEP)
    if unparsed not in (KEEP, HASH):
        raise ConfigError(f"{path}: privacy.unparsed_dead_letters must be keep or hash, got "
                          f"{unparsed!r}")
    if key is None and (unparsed == HASH or any(t == PSEUDONYMISE for _, t in pairs)):
        raise ConfigError(f"{path}: pseudonymising fields or hashing dead letters needs "
                          f"privacy.key (\"env:VARIABLE\" or \"file:/path\")")
    return tuple(pairs), key, unparsed


def _build(content: dict, version: str, path: str) -> Dataset:
    model_name = content.get("model_name")
    if not isinstance(model_name, str) or not model_name.replace("_", "").isalnum():
        raise ConfigError(f"{path}: model_name must be a name of letters, digits and _, "
                          f"got {model_name!r}")
    specs = content.get("fields")
    if not isinstance(specs, list) or not specs:
        raise ConfigError(f"{path}: a data set needs a non-empty \"fields\" list")
    fields = tuple(_field(spec, path) for spec in specs)
    names = [f.name for f in fields]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"{path}: fields named twice: {', '.join(duplicates)}")
    clashing = sorted(set(names) & set(REQUEST_COLUMNS))
    if clashing:
        raise ConfigError(f"{path}: {', '.join(clashing)} name the request itself and cannot "
                          f"be input fields")
    label = content.get("label")
    if not isinstance(label, dict) or "column" not in label or "good" not in label:
        raise ConfigError(f"{path}: label needs a column and its good value, e.g. "
                          f"{{\"column\": \"label\", \"good\": \"1\"}}")
    if label["column"] in names:
        raise ConfigError(f"{path}: the label column {label['column']!r} is also an input field")
    pass_through, key, unparsed = _pass_through(content, names, label["column"], path)
    protected = tuple(content.get("protected_attributes") or ())
    pseudonymised = {n for n, t in pass_through if t == PSEUDONYMISE}
    unknown = sorted(set(protected) - set(names) - pseudonymised)
    if unknown:
        dropped = sorted(set(unknown) & {n for n, _ in pass_through})
        raise ConfigError(f"{path}: protected attributes that are not fields: "
                          f"{', '.join(unknown)}" + (
                              f" ({', '.join(dropped)} dropped: pseudonymise a protected "
                              f"attribute to slice by it)" if dropped else ""))
    costs = content.get("costs")
    if costs is not None:
        if not isinstance(costs, dict) or set(costs) != {"bad_approved", "good_declined"}:
            raise ConfigError(f"{path}: costs need exactly bad_approved and good_declined")
        costs = {k: _number(v, f"costs.{k}", path) for k, v in costs.items()}
        if min(costs.values()) < 0 or sum(costs.values()) <= 0:
            raise ConfigError(f"{path}: costs must be >= 0 and not both 0")
    threshold = _number(content.get("decision_threshold"), "decision_threshold", path)
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise ConfigError(f"{path}: decision_threshold must lie in [0, 1]")
    file = dict(content.get("file") or {"format": "csv"})
    if file.get("format", "csv") not in ("csv", "parquet"):
        raise ConfigError(f"{path}: file format must be csv or parquet, got "
                          f"{file.get('format')!r}")
    if file.get("format", "csv") == "csv" and not file.get("header", False) \
            and not file.get("columns"):
        raise ConfigError(f"{path}: a csv file without header needs \"columns\" (the names of "
                          f"its columns in order)")
    return Dataset(
        model_name=model_name, version=version, fields=fields,
        label_column=str(label["column"]), good_label=str(label["good"]),
        bad_labels=tuple(str(v) for v in label.get("bad") or ()),
        file=file, data=content.get("data"), description=str(content.get("description", "")),
        id_column=content.get("id_column"), event_time_column=content.get("event_time_column"),
        protected_attributes=protected, costs=costs, threshold=threshold,
        pass_through=pass_through, privacy_key=key, unparsed_dead_letters=unparsed)


def load_dataset(path_or_name: str) -> Dataset:
    """A data set configuration file, or a model name with a file ``datasets/<name>.json`` in
    the configuration folders (``models.config.default_path``).

    Raises:
        ConfigError: the file is missing or breaks the rules (the message says which).
    """
    path = path_or_name
    if not path.endswith(".json") and "/" not in path:
        path = default_path("datasets", path_or_name)
        if not pathlib.Path(path).is_file():
            raise ConfigError(f"no data set configuration named {path_or_name!r}: looked for "
                              f"{search_note('datasets', path_or_name)}")
    config = read_config("datasets", path)
    content = config.content
    user = user_config_dir()
    data = content.get("data")
    if user is not None and data and pathlib.Path(path).is_relative_to(user) \
            and not pathlib.Path(data).is_absolute():
        # A file of the user's folder names its data relative to that folder, not to the
        # installed package's project root.
        content = {**content, "data": str(user / data)}
    return _build(content, config.version, path)


def dataset_from_manifest(manifest: dict) -> Dataset:
    """The data set a model version was trained on, from its manifest.

    Raises:
        ConfigError: the manifest has no data set (a model from before data sets were
            configuration).
    """
    content = manifest.get("dataset")
    if not content:
        raise ConfigError(f"model {manifest.get('name')} {manifest.get('version')} has no data "
                          f"set in its manifest; retrain it with models.credit.train --config")
    return Dataset.from_dict(content, path=f"manifest of {manifest.get('name')} "
                                             f"{manifest.get('version')}")


def parse_dataset_text(text: str, path: str = "<text>") -> Dataset:
    """A data set from configuration text (tests, tools)."""
    config = parse_config("datasets", text, path)
    return _build(config.content, config.version, path)


def resolve_data_path(dataset: Dataset, data: str | None = None) -> str:
    """The training file: ``data`` if given, else the configuration's (a shipped file's relative
    to the project root, a user folder's already made absolute by ``load_dataset``)."""
    chosen = data or dataset.data
    if not chosen:
        raise ConfigError(f"no training file: give --data or set \"data\" in the "
                          f"{dataset.model_name} data set configuration")
    candidate = pathlib.Path(chosen)
    return str(candidate if candidate.is_absolute() or data else PROJECT_ROOT / candidate)


# --- reading a data file -----------------------------------------------------------------

@dataclasses.dataclass
class Loaded:
    """What ``read_data`` found.

    Attributes:
        records: input fields per row (numbers float, codes str, missing None).
        labels: 1 good / 0 bad per record.
        ids: the id column per record (None when the data set has none).
        event_times: the event-time column as text per record (None when it has none).
        dropped: rows left out, by reason.
    """

    records: list[dict]
    labels: np.ndarray
    ids: list | None
    event_times: list | None
    dropped: dict
    notes: tuple[str, ...] = ()


# How a number that is not one is spelt in data files (pandas, numpy, R, spreadsheets): read as
# a missing value, which then follows the field's "missing" rule.
NAN_SPELLINGS = frozenset({"nan", "+nan", "-nan", "na", "n/a", "null", "none"})
_INFINITE = frozenset({"inf", "+inf", "-inf", "infinity", "+infinity", "-infinity"})


def _rows_named(origins: list[str]) -> str:
    """"german.data: lines 3 and 4" from origins "german.data:3", "german.data:4"."""
    file = origins[0].rsplit(":", 1)[0]
    rows = [o.rsplit(":", 1)[-1].replace("row ", "") for o in origins]
    shown = ", ".join(rows[:5]) + (f" and {len(rows) - 5} more" if len(rows) > 5 else "")
    if len(rows) in (2, 3, 4, 5):
        shown = ", ".join(rows[:-1]) + f" and {rows[-1]}"
    return f"{file}: {'rows' if len(rows) > 1 else 'row'} {shown}"


def _raw_rows(dataset: Dataset, path: str):
    """(origin, {column: raw value}) for every data row of the file."""
    file = dataset.file
    if file.get("format", "csv") == "parquet":
        import pyarrow.parquet as pq

        for number, row in enumerate(pq.read_table(path).to_pylist(), start=1):
            yield f"{path}:row {number}", row
        return
    text = pathlib.Path(path).read_text(encoding=file.get("encoding", "utf-8"))
    delimiter = file.get("delimiter", ",")
    if delimiter == "whitespace":
        rows = (line.split() for line in text.splitlines())
    else:
        rows = csv.reader(io.StringIO(text), delimiter=delimiter)
    # With a header line the names come from it, else from the configuration.
    header = None if file.get("header", False) else list(file["columns"])
    for number, cells in enumerate(rows, start=1):
        if not cells or all(not c.strip() for c in cells):
            continue
        if header is None:
            header = [c.strip() for c in cells]
            continue
        if len(cells) != len(header):
            raise DataError(f"{path}:{number}: expected {len(header)} columns, got {len(cells)}")
        yield f"{path}:{number}", dict(zip(header, (c.strip() for c in cells)))


def field_value(field: Field, raw, missing_values=()):
    """A raw cell -> the field's value: float for numbers, str for codes, None if missing.

    Raises:
        DataError: a number that does not parse.
    """
    if raw is None or (isinstance(raw, float) and math.isnan(raw)) or \
            (isinstance(raw, str) and (raw.strip() == "" or raw.strip() in missing_values)):
        return None
    if field.kind == NUMERIC:
        if isinstance(raw, str) and raw.strip().lower() in NAN_SPELLINGS:
            return None
        try:
            value = float(raw)
        except (TypeError, ValueError):
            raise DataError(f"{field.name}: {raw!r} is not a number") from None
        if not math.isfinite(value):
            raise DataError(f"{field.name}: {raw!r} is not a finite number")
        return value
    return str(raw)


def read_data(dataset: Dataset, path: str) -> Loaded:
    """Every labelled row of a data file, as the configuration describes it.

    Rows whose label is missing, or whose field marked ``reject`` is missing, are left out and
    counted in ``dropped``.

    Raises:
        DataError: a row with the wrong number of columns, a number that does not parse, a
            label value that is neither the good one nor a configured bad one, or a file
            lacking a configured column.
    """
    missing_values = tuple(dataset.file.get("missing_values", ()))
    records, labels, ids, times = [], [], [], []
    dropped = {"label_missing": 0, "field_missing": 0}
    numeric = [f for f in dataset.fields if f.kind == NUMERIC]
    not_numbers: dict[tuple[str, str], list[str]] = {}  # (field, spelling) -> origins
    infinite: dict[tuple[str, str], list[str]] = {}
    wanted = (*dataset.field_names, dataset.label_column,
              *(c for c in (dataset.id_column, dataset.event_time_column) if c))
    for origin, row in _raw_rows(dataset, path):
        absent = [c for c in wanted if c not in row]
        if absent:
            raise DataError(f"{origin}: no column {', '.join(absent)} (columns: "
                            f"{', '.join(map(str, row))})")
        # Cells that spell no finite number are gathered over the whole file, so the message
        # names every row at once ("nan" in a numeric column made every training score NaN).
        for f in numeric:
            raw = row[f.name]
            text = raw.strip().lower() if isinstance(raw, str) else None
            if text in NAN_SPELLINGS and raw.strip() not in missing_values:
                not_numbers.setdefault((f.name, raw.strip()), []).append(origin)
            elif text in _INFINITE or (isinstance(raw, float) and math.isinf(raw)):
                infinite.setdefault((f.name, str(raw).strip()), []).append(origin)
        if infinite:
            continue
        try:
            record = {f.name: field_value(f, row[f.name], missing_values)
                      for f in dataset.fields}
        except DataError as error:
            raise DataError(f"{origin}: {error}") from None
        label = row[dataset.label_column]
        label = None if label is None else str(label).strip()
        if label in (None, "", *missing_values):
            dropped["label_missing"] += 1
            continue
        if label != dataset.good_label and dataset.bad_labels and \
                label not in dataset.bad_labels:
            raise DataError(f"{origin}: label {label!r} is neither the good value "
                            f"{dataset.good_label!r} nor a bad one {list(dataset.bad_labels)}")
        if any(record[f.name] is None and not f.may_be_missing for f in dataset.fields):
            dropped["field_missing"] += 1
            continue
        records.append(record)
        labels.append(1 if label == dataset.good_label else 0)
        ids.append(row[dataset.id_column] if dataset.id_column else None)
        times.append(str(row[dataset.event_time_column]) if dataset.event_time_column
                     else None)
    if infinite:
        raise DataError("; ".join(f"{_rows_named(origins)}: {name} {spelling!r} is not a "
                                  f"finite number" for (name, spelling), origins
                                  in infinite.items()))
    rules = {f.name: f.missing for f in dataset.fields}
    notes = tuple(f"{_rows_named(origins)}: {name} {spelling!r} is not a number, read as "
                  f"missing (missing: {rules[name]}"
                  + (", so these rows are left out)" if rules[name] == REJECT else
                     ", imputed)") for (name, spelling), origins in not_numbers.items())
    return Loaded(records=records, labels=np.asarray(labels, dtype=np.int64),
                  ids=ids if dataset.id_column else None,
                  event_times=times if dataset.event_time_column else None, dropped=dropped,
                  notes=notes)


def add_dataset_arguments(parser) -> None:
    """``--config`` and ``--data`` of every command-line tool that reads a data set."""
    parser.add_argument("--config", default="credit_german",
                        help="data set configuration file, or a model name with a file "
                             "datasets/<name>.json in $BEAMLINE_CONFIG_DIR or the shipped "
                             "defaults")
    parser.add_argument("--data", default=None,
                        help="data file (default: the configuration's \"data\")")
