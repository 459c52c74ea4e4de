"""Configuration as data: finding, reading and checking the configuration files.

Every kind of configuration is a JSON file ``<kind>/<name>.json``, where ``name`` is the
registry model name it belongs to (``credit_german``, ``credit_crx``, ``radar_qc``), found per
file in two folders: the user's configuration folder (``$BEAMLINE_CONFIG_DIR``, or ``beamline
--config_dir DIR``) when it holds that file, else the defaults shipped inside the package
(``models/shipped_config/``, package data read with ``importlib.resources``); help texts and
docs write that lookup ``<config>/<kind>/<name>.json``. A user brings a data set, or overrides
one shipped file, without writing into the installed package:

- ``datasets``: a credit data set's schema (fields, label, costs; see ``models.credit.dataset``);
- ``offer_rules``: decision thresholds and the banks asked for offers;
- ``evaluation``: slices, drift limits, windows of the scheduled evaluation;
- ``retraining``: the rules that turn an evaluation into a retraining decision;
- ``scenarios``: shifts the demo traffic generator can apply to a data set;
- ``promotion``: when a challenger may replace the champion (``models.credit.compare``);
- ``moments``: the names other radar file writers give the moments (``moments/radar.json``).

Each file declares a ``version``; what is recorded wherever a file was used is that version plus
the first 8 hex digits of the file's sha256, so an edit that forgets to bump the version is
still told apart. Files are read once, where a job starts, and travel as values.
"""

import dataclasses
import datetime
import hashlib
import importlib.resources
import json
import math
import os
import pathlib

from models.provenance import PROJECT_ROOT

# The shipped defaults: package data (setup.py's package_data), on the file system wherever
# the package is installed (a zipped install is not supported).
SHIPPED_DIR = pathlib.Path(str(importlib.resources.files("models").joinpath("shipped_config")))
# The user's own folder, same layout; each file there replaces the shipped file of that name.
CONFIG_DIR_ENV = "BEAMLINE_CONFIG_DIR"
# The pseudonymisation key: the variable the shipped data sets name, and the file `beamline
# setup` writes once when it is not set: <BEAMLINE_HOME>/.secrets/pii.key, BEAMLINE_HOME being
# the project's folder unless given (never the working directory).
KEY_ENV = "BEAMLINE_PII_KEY"


def default_key_file() -> pathlib.Path:
    """Where the pseudonymisation key is kept when ``$BEAMLINE_PII_KEY`` is not set."""
    return pathlib.Path(os.environ.get("BEAMLINE_HOME") or PROJECT_ROOT) / ".secrets" / "pii.key"
KINDS = ("datasets", "offer_rules", "evaluation", "retraining", "scenarios", "promotion",
         "moments")
DESCRIPTIONS = {"datasets": "data set configuration", "offer_rules": "offer rules",
                "evaluation": "evaluation configuration", "retraining": "retraining rules",
                "scenarios": "scenario configuration", "promotion": "promotion rules",
                "moments": "radar moment names"}
# What an evaluation configuration leaves out; the files of kind evaluation may override each.
EVALUATION_DEFAULTS = {"window": "week", "approve_decision": "approve", "calibration_bins": 10,
                       "min_slice_size": 30, "min_class_count": 5, "slices": [], "drift": {}}
RETRAINING_RULE_TYPES = ("metric_drop", "metric_rise", "drift", "slice_gap", "schedule",
                         "event", "estimated_drop", "estimated_rise", "monitoring")
# Estimates come before the labels: nothing to retrain on yet, so they can only alert.
ALERT_ONLY_RULE_TYPES = ("estimated_drop", "estimated_rise")


class ConfigError(ValueError):
    """A configuration file that is missing, not JSON, or breaks its kind's rules."""


@dataclasses.dataclass(frozen=True)
class ConfigFile:
    """One parsed configuration file.

    Attributes:
        kind: one of ``KINDS``.
        path: where it was read from.
        content: the parsed JSON object.
        version: declared version + "+" + 8 hex digits of the file's sha256.
    """

    kind: str
    path: str
    content: dict
    version: str


def user_config_dir() -> pathlib.Path | None:
    """The user's configuration folder (``$BEAMLINE_CONFIG_DIR``), or None when not set.

    Raises:
        ConfigError: the variable names something that is not a folder.
    """
    folder = os.environ.get(CONFIG_DIR_ENV)
    if not folder:
        return None
    path = pathlib.Path(folder).expanduser()
    if not path.is_dir():
        raise ConfigError(f"{CONFIG_DIR_ENV} (or --config_dir) names {folder}, which is not "
                          f"a folder")
    return path.resolve()


def default_path(kind: str, name: str) -> str:
    """Where a model's configuration of a kind is found: ``<kind>/<name>.json`` in the user's
    configuration folder when it is there, else in the shipped defaults (which may not hold
    one either: optional kinds are checked for existence by their callers)."""
    if kind not in KINDS:
        raise ConfigError(f"unknown configuration kind {kind!r}; kinds: {', '.join(KINDS)}")
    user = user_config_dir()
    if user is not None and (user / kind / f"{name}.json").is_file():
        return str(user / kind / f"{name}.json")
    return str(SHIPPED_DIR / kind / f"{name}.json")


def search_note(kind: str, name: str) -> str:
    """Where ``<kind>/<name>.json`` was looked for, in the words of a message."""
    user = os.environ.get(CONFIG_DIR_ENV)
    places = ([f"{user}/{kind}/{name}.json ({CONFIG_DIR_ENV})"] if user else []) + [
        str(SHIPPED_DIR / kind / f"{name}.json")]
    return " or ".join(places)


def versioned(declared: str, text: str) -> str:
    """The recorded version of a file: its declared version plus a short content hash."""
    return f"{declared}+{hashlib.sha256(text.encode('utf-8')).hexdigest()[:8]}"


def parse_config(kind: str, text: str, path: str = "<text>") -> ConfigFile:
    """Configuration text -> ConfigFile (JSON object with a ``version``).

    Raises:
        ConfigError: not JSON, not an object, or without a version.
    """
    try:
        content = json.loads(text)
    except json.JSONDecodeError as error:
        raise ConfigError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(content, dict):
        raise ConfigError(f"{path}: a {kind} file must hold a JSON object")
    if not isinstance(content.get("version"), str) or not content["version"].strip():
        raise ConfigError(f"{path}: a {kind} file needs a \"version\" string")
    return ConfigFile(kind=kind, path=path, content=content,
                      version=versioned(content["version"], text))


def read_config(kind: str, path: str) -> ConfigFile:
    """Read one configuration file (a local path).

    Raises:
        ConfigError: the file is missing or unreadable, or not a valid file of its kind.
    """
    try:
        text = pathlib.Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"cannot read {DESCRIPTIONS.get(kind, kind)} file {path}: "
                          f"{error.strerror or error}") from None
    return parse_config(kind, text, path)


# --- evaluation --------------------------------------------------------------------------

def check_slices(config: dict, path: str, fields: dict[str, str] | None = None) -> None:
    """Slice dimensions are well formed and, given the schema's ``{field: kind}``, name fields
    it has: code groups on categorical fields, bands on numeric ones.

    Raises:
        ConfigError: naming the slice and what is wrong with it.
    """
    for dimension in config.get("slices", []):
        if "name" not in dimension or "field" not in dimension:
            raise ConfigError(f"{path}: every slice needs a name and a field: {dimension}")
        name, field = dimension["name"], dimension["field"]
        if sum(("groups" in dimension, "bands" in dimension,
                bool(dimension.get("by_value")))) != 1:
            raise ConfigError(f"{path}: slice {name!r} needs groups, bands or by_value (one "
                              f"of them)")
        if fields is None:
            continue
        if field not in fields:
            raise ConfigError(f"{path}: slice {name!r} is on field {field!r}, which the data "
                              f"set does not have; its fields: {', '.join(fields)}")
        if dimension.get("by_value"):
            continue
        wanted = "categorical" if "groups" in dimension else "numeric"
        if fields[field] != wanted:
            raise ConfigError(f"{path}: slice {name!r} uses "
                              f"{'groups' if 'groups' in dimension else 'bands'} on "
                              f"{fields[field]} field {field!r}; "
                              f"{'bands' if wanted == 'categorical' else 'groups'} fit it")
        for band in dimension.get("bands", []):
            if "name" not in band or not ("min" in band or "max" in band):
                raise ConfigError(f"{path}: slice {name!r}: a band needs a name and a min "
                                  f"or max: {band}")


def check_drift_features(config: dict, path: str, fields: dict[str, str]) -> None:
    """Drift limits name fields of the schema (or the model's ``score``)."""
    unknown = sorted(set(config.get("drift", {}).get("features", {})) - set(fields) - {"score"})
    if unknown:
        raise ConfigError(f"{path}: drift limits for fields the data set does not have: "
                          f"{', '.join(unknown)}")


def check_monitoring(monitoring, path: str) -> None:
    """The ``monitoring`` section (radar without truth): positive numbers, ISO dates."""
    if monitoring is None:
        return
    if not isinstance(monitoring, dict):
        raise ConfigError(f"{path}: monitoring must be an object")
    for key in ("reference_days", "min_sweeps", "removed_share_change",
                "uncertain_share_change", "moment_shift_sd"):
        value = monitoring.get(key, 1)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ConfigError(f"{path}: monitoring.{key} must be a number > 0, got {value!r}")
    for key in ("reference_from", "reference_to"):
        if monitoring.get(key) is not None:
            try:
                datetime.date.fromisoformat(str(monitoring[key]))
            except ValueError:
                raise ConfigError(f"{path}: monitoring.{key} must be a date (YYYY-MM-DD), got "
                                  f"{monitoring[key]!r}") from None
    floors = monitoring.get("moment_sd_floor", {})
    if not isinstance(floors, dict) or not all(
            isinstance(v, (int, float)) and v >= 0 for v in floors.values()):
        raise ConfigError(f"{path}: monitoring.moment_sd_floor must map moments to numbers "
                          f">= 0")


def load_evaluation_config(path: str, fields: dict[str, str] | None = None) -> dict:
    """An evaluation configuration, checked (against the schema's fields when given).

    Args:
        path: the file.
        fields: ``{field name: "numeric" | "categorical"}`` of the evaluated model's data set;
            None for models without a tabular schema (radar).

    Returns:
        The content over ``EVALUATION_DEFAULTS``, with ``config_version`` added.
    """
    config = read_config("evaluation", path)
    check_slices(config.content, path, fields)
    if fields is not None:
        check_drift_features(config.content, path, fields)
    check_monitoring(config.content.get("monitoring"), path)
    window = config.content.get("window", "week")
    if window not in ("week", "day", "all"):
        raise ConfigError(f"{path}: window must be week, day or all, got {window!r}")
    return {**EVALUATION_DEFAULTS, **config.content, "config_version": config.version}


def evaluation_config_for(path: str | None, model_name: str,
                          fields: dict[str, str] | None = None) -> dict:
    """The evaluation configuration a run uses: ``path`` when given (it must be readable),
    else the model's own file; a model without one is evaluated on the defaults (overall
    metrics and drift of every input, no slices), and ``absent`` names the file looked for.
    """
    if path:
        return load_evaluation_config(path, fields)
    default = default_path("evaluation", model_name)
    if not pathlib.Path(default).exists():
        return {**EVALUATION_DEFAULTS, "config_version": None,
                "absent": search_note("evaluation", model_name)}
    return load_evaluation_config(default, fields)


# --- retraining --------------------------------------------------------------------------

def load_retraining_rules(path: str) -> dict:
    """Retraining rules, checked: every rule has a known type and a name.

    Returns:
        The content, with ``config_version`` added.
    """
    config = read_config("retraining", path)
    rules = config.content.get("rules")
    if not isinstance(rules, list):
        raise ConfigError(f"{path}: retraining rules need a \"rules\" list")
    for rule in rules:
        if rule.get("type") not in RETRAINING_RULE_TYPES:
            raise ConfigError(f"{path}: rule {rule.get('name')!r} has type "
                              f"{rule.get('type')!r}; types: {', '.join(RETRAINING_RULE_TYPES)}")
        if rule.get("action", "retrain") not in ("retrain", "alert"):
            raise ConfigError(f"{path}: rule {rule.get('name')!r}: action must be retrain or "
                              f"alert")
        if rule["type"] in ALERT_ONLY_RULE_TYPES and rule.get("action") != "alert":
            raise ConfigError(f"{path}: rule {rule.get('name')!r} of type {rule['type']} needs "
                              f"\"action\": \"alert\": an estimate comes before the labels, "
                              f"so there is nothing to retrain on yet")
    minimum = config.content.get("min_new_labels", 0)
    if not isinstance(minimum, (int, float)) or math.isnan(minimum) or minimum < 0:
        raise ConfigError(f"{path}: min_new_labels must be a number >= 0")
    return {**config.content, "config_version": config.version}
