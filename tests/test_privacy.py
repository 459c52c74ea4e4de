"""Personal data by configuration: pass-through fields dropped or pseudonymised before any
output holds them, dead letters redacted, model inputs never hidden, slices still grouping."""

import hashlib
import hmac
import json
import os

import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from models import registry as model_registry
from models.config import ConfigError
from models.credit.dataset import Dataset
from pipelines import credit_scoring
from tests.conftest import german_dataset, write_jsonl
from transforms.credit.dofns import ParseRequestBatchFn
from transforms.credit.privacy import Privacy, key_fingerprint, privacy_for, read_key
from transforms.credit.requests import RequestError, parse_request

KEY = "k" * 32


def _content(**changes) -> dict:
    content = german_dataset().to_dict()
    content.update(changes)
    return content


@pytest.mark.parametrize("changes, message", [
    ({"pass_through": [{"name": "age_years", "treatment": "drop"}]},
     "field 'age_years' is a model input and cannot be dropped or pseudonymised: the model, "
     "training snapshots, drift and replay need inputs as they were"),
    ({"pass_through": [{"name": "email", "treatment": "encrypt"}]},
     "a pass-through field needs a name and a treatment, drop or pseudonymise"),
    ({"pass_through": [{"name": "request_id", "treatment": "drop"}]},
     "pass-through field 'request_id' names the request id"),
    ({"pass_through": [{"name": "email", "treatment": "pseudonymise"}], "privacy": {}},
     "pseudonymising fields or hashing dead letters needs privacy.key"),
    ({"privacy": {"key": "s3cr3t-literal-key-value", "unparsed_dead_letters": "keep"}},
     "privacy.key names where the key is, \"env:VARIABLE\" or \"file:/path\", never the key"),
    ({"privacy": {"key": "env:K", "unparsed_dead_letters": "shred"}},
     "privacy.unparsed_dead_letters must be keep or hash"),
    ({"pass_through": [{"name": "region", "treatment": "drop"}],
      "protected_attributes": ["region"]},
     "protected attributes that are not fields: region (region dropped: pseudonymise a "
     "protected attribute to slice by it)"),
])
def test_privacy_configuration_refusals(changes, message):
    with pytest.raises(ConfigError) as error:
        Dataset.from_dict(_content(**changes), path="bank.json")
    assert message in str(error.value)


def test_a_model_input_marked_pii_is_a_configuration_error():
    content = _content()
    content["fields"][0]["pii"] = True
    with pytest.raises(ConfigError, match="field 'checking_status' is a model input and cannot "
                                          "be dropped or pseudonymised"):
        Dataset.from_dict(content, path="bank.json")


def test_the_key_comes_from_a_variable_or_a_file_and_is_never_echoed(tmp_path, monkeypatch):
    monkeypatch.delenv("BANK_KEY", raising=False)
    with pytest.raises(ConfigError, match="environment variable BANK_KEY, which is not set"):
        read_key("env:BANK_KEY")
    monkeypatch.setenv("BANK_KEY", "short-secret")
    with pytest.raises(ConfigError) as error:
        read_key("env:BANK_KEY")
    assert "is 12 bytes; it needs at least 16" in str(error.value)
    assert "short-secret" not in str(error.value)
    (tmp_path / "key").write_text(KEY + "\n")
    assert read_key(f"file:{tmp_path / 'key'}") == KEY.encode()
    with pytest.raises(ConfigError, match="key file .*missing cannot be read: No such file"):
        read_key(f"file:{tmp_path / 'missing'}")


def _privacy(**changes) -> Privacy:
    content = _content(pass_through=[{"name": "applicant_name", "treatment": "drop"},
                                     {"name": "national_id", "treatment": "pseudonymise"}],
                       privacy={"key": "env:UNUSED", "unparsed_dead_letters": "hash"})
    content.update(changes)
    return Privacy(**{**privacy_for(Dataset.from_dict(content), load_key=False).__dict__,
                      "key": KEY.encode()})


def test_pseudonyms_are_keyed_hmac_sha256_and_consistent():
    privacy = _privacy()
    expected = hmac.new(KEY.encode(), b"DE-123", hashlib.sha256).hexdigest()[:32]
    assert privacy.pseudonym("DE-123") == privacy.pseudonym("DE-123") == expected
    assert privacy.pseudonym(123) == hmac.new(KEY.encode(), b"123",
                                              hashlib.sha256).hexdigest()[:32]
    other = Privacy(**{**privacy.__dict__, "key": b"another key of 16+ bytes"})
    assert other.pseudonym("DE-123") != expected
    assert privacy.pseudonym(None) is None


def test_parsing_drops_and_pseudonymises_pass_through_fields(make_requests):
    import datetime

    privacy = _privacy()
    fields = german_dataset().fields
    request = dict(make_requests(1)[0], applicant_name="Erika Muster", national_id="DE-42")
    now = datetime.datetime(2026, 11, 1, tzinfo=datetime.UTC)
    parsed = parse_request(json.dumps(request), "o", now, fields, privacy=privacy)
    assert parsed.pseudonyms == {"national_id": privacy.pseudonym("DE-42")}
    assert "applicant_name" not in parsed.fields and "national_id" not in parsed.fields
    # Without the privacy configuration the same request is refused (unexpected fields).
    with pytest.raises(RequestError, match="unexpected fields: applicant_name, national_id"):
        parse_request(json.dumps(request), "o", now, fields)
    nested = dict(request, national_id={"number": "DE-SECRET"})
    with pytest.raises(RequestError) as error:
        parse_request(json.dumps(nested), "o", now, fields, privacy=privacy)
    assert str(error.value) == "national_id must be a single value (text or number), got a " \
                               "JSON object"


def test_dead_letter_raws_are_redacted_or_kept_as_a_keyed_hash():
    privacy = _privacy()
    raw, digest = privacy.redact_raw(json.dumps(
        {"request_id": "r", "applicant_name": "Erika", "national_id": "DE-1", "email": "e@x"}))
    assert json.loads(raw) == {"request_id": "r", "national_id": privacy.pseudonym("DE-1"),
                               "email": privacy.pseudonym("e@x")} and digest is None
    broken = '{"request_id": "r", "applicant_name": "Erika'
    assert privacy.redact_raw(broken) == (None, privacy.pseudonym(broken))
    keep = _privacy(privacy={"key": "env:UNUSED", "unparsed_dead_letters": "keep"})
    assert keep.redact_raw(broken) == (broken, None)
    # Undeclared keys keep their values when unparsed lines are kept.
    assert json.loads(keep.redact_raw('{"email": "e@x"}')[0]) == {"email": "e@x"}


# --- end to end ------------------------------------------------------------------------

FIXED_SECRETS = ["Zacharias Geheim", "Yvonne Verborgen", "x.secret@example.org", "DE-SECRET-77",
           "DE-OBJ-SECRET", "Bavaria", "Saxony", "Hesse"]
REGIONS = ["Bavaria", "Saxony", "Hesse"]


@pytest.fixture
def pii_run(credit_model_ref, tmp_path, make_requests):
    """A model version whose data set declares pass-through personal data (the served
    version's manifest carries it), and a batch run over requests carrying it."""
    content = _content(
        pass_through=[{"name": "applicant_name", "treatment": "drop"},
                      {"name": "national_id", "treatment": "pseudonymise"},
                      {"name": "phone", "treatment": "drop"},
                      {"name": "region", "treatment": "pseudonymise"}],
        protected_attributes=["personal_status_sex", "region"],
        privacy={"key": "env:BEAMLINE_PII_KEY", "unparsed_dead_letters": "hash"})
    registry = str(tmp_path / "registry")
    model_registry.publish(registry, "credit_german", credit_model_ref.path,
                           {**credit_model_ref.manifest, "dataset": content})
    requests = make_requests(120, "pii")
    for i, r in enumerate(requests):
        r.update(applicant_name=f"Person Nummer{i}", national_id=f"DE-ID-{i:06d}",
                 phone=f"+49 30 555{i:04d}", region=REGIONS[i % 3])
    secrets = FIXED_SECRETS + [v for r in requests for v in (r["applicant_name"],
                                                             r["national_id"], r["phone"])]
    good = requests[0]
    bad = [
        '{"request_id": "bad-1", "applicant_name": "Zacharias Geheim", ',   # not JSON
        json.dumps(dict(good, request_id="bad-2", credit_amount=-5,
                        applicant_name="Yvonne Verborgen", national_id="DE-SECRET-77")),
        json.dumps(dict(good, request_id="bad-3", email="x.secret@example.org")),
        json.dumps(dict(good, request_id="bad-4", national_id={"n": "DE-OBJ-SECRET"})),
        json.dumps(requests[5]),                                              # duplicate
    ]
    path = write_jsonl(tmp_path / "requests.jsonl", requests + bad)
    out = tmp_path / "out"
    credit_scoring.run(["--registry", registry, "--input", path, "--output", str(out),
                        "--model_version", "latest", "--sample_rate", "1.0"])
    privacy = privacy_for(Dataset.from_dict(content))
    return requests, bad, out, privacy, secrets


@pytest.mark.slow
def test_no_personal_value_reaches_any_output(pii_run):
    requests, bad, out, privacy, secrets = pii_run
    files = [os.path.join(d, f) for d, _, fs in os.walk(out) for f in fs
             if f.endswith(".parquet")]
    assert {f.split(os.sep)[len(str(out).split(os.sep))] for f in files} == {
        "responses", "predictions", "dead_letters"}
    for path in files:  # decoded values, not bytes: Parquet pages are compressed
        for column in pq.read_table(path).to_pydict().values():
            for value in column:
                text = json.dumps(value, default=str)
                leaked = [s for s in secrets if s in text]
                assert not leaked, f"{leaked} in {path}"
    dead = {d["origin"].rsplit(":", 1)[1]: d for d in ds.dataset(
        out / "dead_letters", partitioning="hive").to_table().to_pylist()}
    assert len(dead) == len(bad)
    unparsed = dead[str(len(requests) + 1)]
    assert unparsed["raw"] is None and unparsed["raw_hmac"] == privacy.pseudonym(bad[0])
    assert unparsed["raw_bytes"] == len(bad[0].encode())
    redacted = json.loads(dead[str(len(requests) + 2)]["raw"])
    assert redacted["national_id"] == privacy.pseudonym("DE-SECRET-77")
    assert "applicant_name" not in redacted and redacted["credit_amount"] == -5
    assert {d["stage"] for d in dead.values()} == {"parse", "validate", "duplicate"}


@pytest.mark.slow
def test_pseudonymised_columns_join_and_slice_like_the_originals(pii_run):
    from transforms.evaluation.metrics import credit_group_metrics

    requests, _, out, privacy, _ = pii_run
    rows = ds.dataset(out / "predictions", partitioning="hive").to_table().to_pylist()
    assert len(rows) == len(requests)
    assert not {"applicant_name", "phone"} & set(rows[0])
    # Each row names the key its pseudonyms were made under, by fingerprint only.
    assert {r["pii_key_id"] for r in rows} == {privacy.key_id} and len(privacy.key_id) == 16
    assert privacy.key.hex()[:16] != privacy.key_id and privacy.key.decode() not in str(rows)
    by_id = {r["request_id"]: r for r in requests}
    for row in rows:
        original = by_id[row["prediction_id"]]
        assert row["national_id"] == privacy.pseudonym(original["national_id"])
        assert row["region"] == privacy.pseudonym(original["region"])
        row["label"] = int(row["prediction_id"][-1]) % 2  # any labels: slices must group
    config = {"costs": None, "approve_decision": "approve", "calibration_bins": 5,
              "min_slice_size": 1, "min_class_count": 1, "drift": {},
              "slices": [{"name": "region", "field": "region", "by_value": True}]}
    sizes = {m["slice_value"]: m["value"] for m in credit_group_metrics(rows, config, {})
             if m["metric"] == "size" and m["slice"] == "region"}
    assert sizes == {privacy.pseudonym(region): 40 for region in REGIONS}


def test_the_key_beamline_setup_generated_is_found_without_exporting_it(tmp_path, monkeypatch):
    from beamline.setup import pseudonymisation_key

    monkeypatch.delenv("BEAMLINE_PII_KEY", raising=False)
    monkeypatch.setenv("BEAMLINE_HOME", str(tmp_path))
    with pytest.raises(ValueError, match=r"not set, and there is no key file .*pii\.key"):
        read_key("env:BEAMLINE_PII_KEY")
    monkeypatch.chdir(tmp_path / "..")  # the key's place does not depend on the working folder
    assert "generated" in pseudonymisation_key()
    assert "BEAMLINE_PII_KEY" not in os.environ  # later runs find the file, not a variable
    key_file = tmp_path / ".secrets" / "pii.key"
    assert oct(key_file.stat().st_mode & 0o777) == "0o600"
    assert read_key("env:BEAMLINE_PII_KEY") == key_file.read_bytes().strip()
    # Another variable a data set names gets no such fallback.
    with pytest.raises(ValueError, match="BANK_KEY, which is not set$"):
        read_key("env:BANK_KEY")


def test_a_worker_holding_another_key_than_the_launch_is_refused(monkeypatch):
    """The launch records its key's fingerprint in every row; a worker that reads another key
    (another environment) would pseudonymise under it, so it stops at set-up instead."""
    dataset = Dataset.from_dict(_content(
        pass_through=[{"name": "national_id", "treatment": "pseudonymise"}],
        privacy={"key": "env:BANK_KEY", "unparsed_dead_letters": "keep"}))
    launch_id = key_fingerprint(KEY.encode())
    assert launch_id == key_fingerprint(KEY.encode()) != key_fingerprint(b"j" * 32)
    monkeypatch.setenv("BANK_KEY", KEY)
    same = ParseRequestBatchFn("credit_scoring", "r", 10_000, dataset.fields,
                               privacy_for(dataset, load_key=False), "env:BANK_KEY", launch_id)
    same.setup()
    monkeypatch.setenv("BANK_KEY", "j" * 32)
    other = ParseRequestBatchFn("credit_scoring", "r", 10_000, dataset.fields,
                                privacy_for(dataset, load_key=False), "env:BANK_KEY", launch_id)
    with pytest.raises(ConfigError, match=f"fingerprint {key_fingerprint(b'j' * 32)}.* is not "
                                          f"the one the run was launched with \\({launch_id}\\)"):
        other.setup()


@pytest.mark.parametrize("declares_personal_data", [True, False])
def test_a_name_typed_into_the_wrong_field_is_echoed_nowhere(make_requests, monkeypatch,
                                                             declares_personal_data):
    """A value that does not fit its field is not quoted in the message, and the dead letter
    keeps only its length (and keyed hash when the data set has a key)."""
    content = _content(pass_through=[{"name": "national_id", "treatment": "pseudonymise"}],
                       privacy={"key": "env:BANK_KEY", "unparsed_dead_letters": "keep"})
    if not declares_personal_data:  # no key: the length alone is kept
        content = {k: v for k, v in content.items() if k not in ("pass_through", "privacy")}
    dataset = Dataset.from_dict(content)
    monkeypatch.setenv("BANK_KEY", KEY)
    parse = ParseRequestBatchFn("credit_scoring", "r", 10_000, dataset.fields,
                                privacy_for(dataset, load_key=False),
                                dataset.privacy_key, None)
    parse.setup()
    good = make_requests(3, "misfit")
    name = "Greta Geheim-Verborgen"
    lines = [("a", json.dumps(dict(good[0], event_time=name))),
             ("b", json.dumps(dict(good[1], checking_status=name))),
             ("c", json.dumps(dict(good[2], credit_amount=name)))]
    letters = [o.value for o in parse.process(lines) if hasattr(o, "tag")]
    assert [d["origin"] for d in letters] == ["a", "b", "c"]
    assert "event_time (a string of 22 characters) is not ISO-8601" in letters[0]["message"]
    for letter, field in zip(letters, ("event_time", "checking_status", "credit_amount")):
        assert name not in json.dumps(letter, default=str)
        kept = json.loads(letter["raw"])[field]
        assert kept["characters"] == len(name)
        assert ("hmac" in kept) == declares_personal_data
