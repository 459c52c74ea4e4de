import json

import pytest

from models.config import ConfigError
from models.credit.dataset import load_dataset
from tests.conftest import german_dataset
from transforms.credit.rules import (
    APPROVE,
    DECLINE,
    REFER,
    check_rules_fit,
    choose_bank,
    decide,
    default_rules_path,
    load_rules,
    parse_rules,
    quote_fields,
)

GERMAN_RULES = default_rules_path("credit_german")

FIELDS = {"credit_amount": 5000.0, "duration_months": 24.0, "purpose": "A43"}


@pytest.fixture
def rules():
    return load_rules(GERMAN_RULES)


def test_shipped_rules_load_with_a_content_hashed_version(rules):
    declared = json.load(open(GERMAN_RULES))["version"]
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
    text = open(GERMAN_RULES).read()
    edited = text.replace('"max_amount": 20000', '"max_amount": 25000')
    assert parse_rules(text).version != parse_rules(edited).version


def test_invalid_rules_are_rejected_clearly():
    with pytest.raises(ValueError, match="lacks the key 'banks'"):
        parse_rules(json.dumps({"version": "1", "decision": {"approve_min_score": 0.8,
                                                             "refer_min_score": 0.5}}))
    with pytest.raises(ValueError, match="refer_min_score <= approve_min_score"):
        parse_rules(json.dumps({"version": "1", "banks": [],
                                "decision": {"approve_min_score": 0.5, "refer_min_score": 0.8}}))
    with pytest.raises(ConfigError, match="sets max_amount but \"fields\" maps no amount"):
        parse_rules(json.dumps({"version": "1", "fields": {"amount": None},
                                "decision": {"approve_min_score": 0.8, "refer_min_score": 0.5},
                                "banks": [{"bank": "b", "min_score": 0.8, "max_amount": 10}]}))
    with pytest.raises(ConfigError, match="needs a \"version\""):
        parse_rules(json.dumps({"banks": []}))


def test_rules_are_checked_against_the_served_data_set(rules):
    check_rules_fit(rules, german_dataset().kinds)  # the shipped pair fits
    crx = load_rules(default_rules_path("credit_crx"))
    with pytest.raises(ConfigError, match="maps amount to 'credit_amount', which the served "
                                          "data set does not have"):
        check_rules_fit(rules, load_dataset("credit_crx").kinds)
    check_rules_fit(crx, load_dataset("credit_crx").kinds)


def test_rules_without_mapped_fields_choose_by_score_and_quote_nothing_else():
    crx = load_rules(default_rules_path("credit_crx"))
    assert crx.fields == {}
    assert quote_fields({"A1": "b", "A15": 0.0}, crx) == {}
    assert choose_bank(0.95, {"A1": "b"}, crx) == "alpenbank"
    assert choose_bank(0.75, {"A1": "b"}, crx) == "rheinland_direkt"
    assert choose_bank(0.65, {"A1": "b"}, crx) is None
