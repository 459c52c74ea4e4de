import json

import pytest

from transforms.credit_rules import (
    APPROVE,
    DECLINE,
    REFER,
    choose_bank,
    decide,
    load_rules,
    parse_rules,
)

FIELDS = {"credit_amount": 5000.0, "duration_months": 24.0, "purpose": "A43"}


@pytest.fixture
def rules():
    return load_rules()


def test_shipped_rules_load_with_a_content_hashed_version(rules):
    declared = json.load(open("transforms/rules/credit_offer_rules.json"))["version"]
    assert rules.version.startswith(declared + "+") and len(rules.version) == len(declared) + 9
    assert [b.bank for b in rules.banks] == ["alpenbank", "hansa_kredit", "rheinland_direkt"]


def test_decision_thresholds(rules):
    assert decide(0.95, rules) == APPROVE
    assert decide(rules.approve_min_score, rules) == APPROVE
    assert decide(0.7, rules) == REFER
    assert decide(0.2, rules) == DECLINE


def test_first_bank_whose_limits_hold_is_chosen(rules):
    assert choose_bank(0.95, FIELDS, rules) == "alpenbank"
    assert choose_bank(0.90, FIELDS, rules) == "hansa_kredit"
    assert choose_bank(0.85, FIELDS, rules) == "rheinland_direkt"
    # Education (A46) is excluded by hansa_kredit, so the next bank is asked.
    assert choose_bank(0.90, dict(FIELDS, purpose="A46"), rules) == "rheinland_direkt"
    # Too large for every bank that would take this score.
    assert choose_bank(0.90, dict(FIELDS, credit_amount=15000.0), rules) is None
    assert choose_bank(0.95, dict(FIELDS, duration_months=96.0), rules) is None


def test_an_edit_changes_the_version_even_without_a_bump():
    text = open("transforms/rules/credit_offer_rules.json").read()
    edited = text.replace('"max_amount": 20000', '"max_amount": 25000')
    assert parse_rules(text).version != parse_rules(edited).version


def test_invalid_rules_are_rejected_clearly():
    with pytest.raises(ValueError, match="lacks the key 'banks'"):
        parse_rules(json.dumps({"version": "1", "decision": {"approve_min_score": 0.8,
                                                             "refer_min_score": 0.5}}))
    with pytest.raises(ValueError, match="refer_min_score <= approve_min_score"):
        parse_rules(json.dumps({"version": "1", "banks": [],
                                "decision": {"approve_min_score": 0.5, "refer_min_score": 0.8}}))
