"""Business rules of the credit offer: score -> decision, and which bank to ask for an offer.

The rules live in a versioned JSON file (``transforms/rules/credit_offer_rules.json``). They are
read once when the graph is built and travel with the DoFns as values, so workers need no access
to the file. The recorded rules version is the file's declared version plus a short hash of its
content: an edit that forgets to bump the version is still told apart.
"""

import dataclasses
import hashlib
import json
import pathlib

DEFAULT_RULES_PATH = str(pathlib.Path(__file__).parent / "rules" / "credit_offer_rules.json")
APPROVE, REFER, DECLINE = "approve", "refer", "decline"


@dataclasses.dataclass(frozen=True)
class BankRule:
    bank: str
    min_score: float
    max_amount: float
    max_duration_months: float
    excluded_purposes: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class OfferRules:
    version: str
    approve_min_score: float
    refer_min_score: float
    banks: tuple[BankRule, ...]


def parse_rules(text: str) -> OfferRules:
    """Rules file content -> OfferRules.

    Raises:
        ValueError: a required key is missing or the thresholds are not ordered.
    """
    content = json.loads(text)
    try:
        decision = content["decision"]
        rules = OfferRules(
            version=f"{content['version']}+{hashlib.sha256(text.encode()).hexdigest()[:8]}",
            approve_min_score=float(decision["approve_min_score"]),
            refer_min_score=float(decision["refer_min_score"]),
            banks=tuple(
                BankRule(bank=b["bank"], min_score=float(b["min_score"]),
                         max_amount=float(b["max_amount"]),
                         max_duration_months=float(b["max_duration_months"]),
                         excluded_purposes=tuple(b.get("excluded_purposes", ())))
                for b in content["banks"]),
        )
    except KeyError as error:
        raise ValueError(f"rules file lacks the key {error}") from None
    if not 0.0 <= rules.refer_min_score <= rules.approve_min_score <= 1.0:
        raise ValueError("rules need 0 <= refer_min_score <= approve_min_score <= 1")
    return rules


def load_rules(path: str = DEFAULT_RULES_PATH) -> OfferRules:
    """Read and parse a rules file (local path)."""
    return parse_rules(pathlib.Path(path).read_text(encoding="utf-8"))


def decide(score: float, rules: OfferRules) -> str:
    """approve / refer / decline from the probability of a good credit risk."""
    if score >= rules.approve_min_score:
        return APPROVE
    if score >= rules.refer_min_score:
        return REFER
    return DECLINE


def choose_bank(score: float, fields: dict, rules: OfferRules) -> str | None:
    """The first bank (in the file's order of preference) whose limits all hold, else None."""
    for rule in rules.banks:
        if (score >= rule.min_score
                and fields["credit_amount"] <= rule.max_amount
                and fields["duration_months"] <= rule.max_duration_months
                and fields["purpose"] not in rule.excluded_purposes):
            return rule.bank
    return None
