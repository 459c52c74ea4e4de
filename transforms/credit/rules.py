"""Business rules of the credit offer: score -> decision, and which bank to ask for an offer.

The rules live in a versioned JSON file per data set (``<config>/offer_rules/<model name>.json``).
They are read once when the graph is built and travel with the DoFns as values, so workers
need no access to the file. The recorded rules version is the file's declared version plus a
short hash of its content (``models.config``).

``fields`` maps what the offer needs (``amount``, ``duration_months``, ``purpose``) to the data
set's fields, or to null when the data set has no such field: a bank limit on a quantity the
data set lacks is a configuration error, and the quote request carries only what is mapped.
"""

import dataclasses
import pathlib
from collections.abc import Sequence

import numpy as np
from apache_beam.io.filesystems import FileSystems

from models.config import ConfigError, default_path, parse_config, read_config
from models.files import write_file

APPROVE, REFER, DECLINE = "approve", "refer", "decline"
# Every rules file a run used, kept by its version beside the model it served.
ARCHIVE = "offer_rules"
QUOTE_FIELDS = ("amount", "duration_months", "purpose")


@dataclasses.dataclass(frozen=True)
class BankRule:
    bank: str
    min_score: float
    max_amount: float | None = None
    max_duration_months: float | None = None
    excluded_purposes: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class OfferRules:
    version: str
    approve_min_score: float
    refer_min_score: float
    banks: tuple[BankRule, ...]
    fields: dict = dataclasses.field(default_factory=dict)  # quote name -> data set field


def _bank(spec: dict, fields: dict, path: str) -> BankRule:
    rule = BankRule(
        bank=spec["bank"], min_score=float(spec["min_score"]),
        max_amount=None if spec.get("max_amount") is None else float(spec["max_amount"]),
        max_duration_months=(None if spec.get("max_duration_months") is None
                             else float(spec["max_duration_months"])),
        excluded_purposes=tuple(spec.get("excluded_purposes", ())))
    for limit, needs in (("max_amount", "amount"), ("max_duration_months", "duration_months"),
                         ("excluded_purposes", "purpose")):
        if getattr(rule, limit) and not fields.get(needs):
            raise ConfigError(f"{path}: bank {rule.bank!r} sets {limit} but \"fields\" maps no "
                              f"{needs} field")
    return rule


def rules_from_config(content: dict, version: str, path: str) -> OfferRules:
    """A parsed rules file -> OfferRules.

    Raises:
        ConfigError: a required key is missing, the thresholds are not ordered, or a bank
            limit needs a field the mapping lacks.
    """
    fields = content.get("fields", {})
    unknown = sorted(set(fields) - set(QUOTE_FIELDS))
    if unknown:
        raise ConfigError(f"{path}: \"fields\" maps unknown quote fields {unknown}; known: "
                          f"{', '.join(QUOTE_FIELDS)}")
    fields = {k: v for k, v in fields.items() if v}
    try:
        decision = content["decision"]
        rules = OfferRules(
            version=version,
            approve_min_score=float(decision["approve_min_score"]),
            refer_min_score=float(decision["refer_min_score"]),
            banks=tuple(_bank(b, fields, path) for b in content["banks"]),
            fields=fields)
    except KeyError as error:
        raise ConfigError(f"{path}: rules file lacks the key {error}") from None
    if not 0.0 <= rules.refer_min_score <= rules.approve_min_score <= 1.0:
        raise ConfigError(f"{path}: rules need 0 <= refer_min_score <= approve_min_score <= 1")
    return rules


def parse_rules(text: str, path: str = "<text>") -> OfferRules:
    """Rules file content -> OfferRules (see ``rules_from_config``)."""
    config = parse_config("offer_rules", text, path)
    return rules_from_config(config.content, config.version, path)


def load_rules(path: str) -> OfferRules:
    """Read and parse a rules file (local path)."""
    config = read_config("offer_rules", path)
    return rules_from_config(config.content, config.version, path)


def default_rules_path(model_name: str) -> str:
    """``<config>/offer_rules/<model name>.json``."""
    return default_path("offer_rules", model_name)


# The rules version recorded when a model has no offer rules file.
NO_RULES = "none"


def rules_without_offers(threshold: float) -> OfferRules:
    """The rules of a model without an offer rules file: approve at its data set's decision
    threshold (the cost break-even, else 0.5), no refer band, no bank asked."""
    return OfferRules(version=NO_RULES, approve_min_score=threshold,
                      refer_min_score=threshold, banks=())


def rules_for(model_name: str, threshold: float, path: str | None = None
              ) -> tuple[OfferRules, str | None]:
    """(the rules a run decides with, the file they came from or None).

    ``path`` when given (it must be readable); else the model's own file; a model without one
    decides at ``threshold`` and asks no bank (``rules_without_offers``).
    """
    if path:
        return load_rules(path), path
    default = default_rules_path(model_name)
    if not pathlib.Path(default).exists():
        return rules_without_offers(threshold), None
    return load_rules(default), default


def check_rules_fit(rules: OfferRules, kinds: dict[str, str], path: str = "rules") -> None:
    """The rules read only fields the served data set has, of the right kind.

    Raises:
        ConfigError: naming the quote field and the missing or mistyped data set field.
    """
    for quote_field, name in rules.fields.items():
        if name not in kinds:
            raise ConfigError(f"{path}: \"fields\" maps {quote_field} to {name!r}, which the "
                              f"served data set does not have")
        wanted = "categorical" if quote_field == "purpose" else "numeric"
        if kinds[name] != wanted:
            raise ConfigError(f"{path}: {quote_field} must map to a {wanted} field; {name!r} "
                              f"is {kinds[name]}")


def decide(score: float, rules: OfferRules) -> str:
    """approve / refer / decline from the probability of a good credit risk."""
    if score >= rules.approve_min_score:
        return APPROVE
    if score >= rules.refer_min_score:
        return REFER
    return DECLINE


def decide_many(scores: np.ndarray, rules: OfferRules) -> np.ndarray:
    """``decide`` for a whole column of scores at once (an object array of decisions)."""
    scores = np.asarray(scores, dtype=np.float64)
    return np.select([scores >= rules.approve_min_score, scores >= rules.refer_min_score],
                     [APPROVE, REFER], DECLINE).astype(object)


def quote_fields(fields: dict, rules: OfferRules) -> dict:
    """The applicant's amount, duration and purpose under the rules' mapping (mapped ones only)."""
    return {quote: fields.get(name) for quote, name in rules.fields.items()}


def _numbers(values: Sequence | None, n: int) -> np.ndarray:
    if values is None:
        return np.full(n, np.nan)
    return np.asarray([np.nan if v is None else v for v in values], dtype=np.float64)


def choose_banks(scores: np.ndarray, quote: dict[str, Sequence], rules: OfferRules
                 ) -> np.ndarray:
    """The first bank (in the file's order of preference) whose limits all hold, per applicant,
    else None; for whole columns at once.

    Args:
        scores: probabilities of a good credit risk.
        quote: quote field (amount, duration_months, purpose) -> that column's values, for the
            fields the rules map; None marks a missing value.
        rules: the offer rules.

    A limit on a value the applicant left missing does not hold.
    """
    scores = np.asarray(scores, dtype=np.float64)
    n = len(scores)
    amount = _numbers(quote.get("amount"), n)
    months = _numbers(quote.get("duration_months"), n)
    purpose = np.asarray(quote.get("purpose", [None] * n), dtype=object)
    banks = np.full(n, None, dtype=object)
    undecided = np.ones(n, dtype=bool)
    with np.errstate(invalid="ignore"):  # NaN (missing) compares False: the limit fails
        for rule in rules.banks:
            fits = undecided & (scores >= rule.min_score)
            if rule.max_amount is not None:
                fits &= amount <= rule.max_amount
            if rule.max_duration_months is not None:
                fits &= months <= rule.max_duration_months
            if rule.excluded_purposes:
                fits &= ~np.isin(purpose, list(rule.excluded_purposes))
            banks[fits] = rule.bank
            undecided &= ~fits
    return banks


def choose_bank(score: float, fields: dict, rules: OfferRules) -> str | None:
    """``choose_banks`` for one applicant's fields."""
    quote = {name: [value] for name, value in quote_fields(fields, rules).items()}
    return choose_banks(np.asarray([score]), quote, rules)[0]


def archive_path(registry: str, model_name: str, version: str) -> str:
    """``<registry>/<model>/offer_rules/<rules version>.json``."""
    return FileSystems.join(registry, model_name, ARCHIVE, f"{version}.json")


def archive_rules(registry: str, model_name: str, path: str) -> str:
    """Keep the rules file a run starts with under its version (once), so any decision made
    under it can be replayed later without digging it out of history. Returns the archive
    path."""
    text = pathlib.Path(path).read_text(encoding="utf-8")
    version = parse_rules(text, path).version
    target = archive_path(registry, model_name, version)
    if not FileSystems.exists(target):
        write_file(target, text.encode("utf-8"))
    return target


def archived_rules(registry: str, model_name: str, version: str | None) -> OfferRules | None:
    """The archived rules file of a version, or None when none was archived."""
    if not version:
        return None
    try:
        with FileSystems.open(archive_path(registry, model_name, version)) as f:
            text = f.read().decode("utf-8")
    except OSError:
        return None
    rules = parse_rules(text, archive_path(registry, model_name, version))
    return rules if rules.version == version else None
