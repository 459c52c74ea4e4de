"""The credit pipeline's record batches give the same rows as the per-request functions the
interactive offers API uses: same decisions, banks, columns and values, file for file."""

import datetime
import json
import os

import numpy as np
import pyarrow.dataset as ds
import pytest

from models import registry as model_registry
from models.credit.dataset import dataset_from_manifest, load_dataset, read_data
from models.credit.model import predict_scores
from models.credit.replay import replay_requests
from models.provenance import code_version
from pipelines import credit_scoring
from tests.conftest import write_jsonl
from transforms.common.sampling import keep_prediction
from transforms.credit import rows as credit_rows
from transforms.credit.dofns import ParseRequestBatchFn
from transforms.credit.privacy import privacy_for
from transforms.credit.requests import (
    RequestError,
    parse_request,
    parse_requests,
    request_batch_schema,
)
from transforms.credit.rules import (
    choose_bank,
    choose_banks,
    decide,
    decide_many,
    default_rules_path,
    load_rules,
)

T0 = datetime.datetime(2026, 11, 1, tzinfo=datetime.UTC)
READ = T0 + datetime.timedelta(days=30)  # when the requests (a minute apart from T0) are read
CONTEXT = {"pipeline": "credit_scoring", "run_mode": "batch", "run_id": "r1",
           "code_version": "c1", "models": {"/reg/m/v0001/model.keras": ("m", "v0001", "abc")}}
# Columns a batch run and a per-request call legitimately differ in (clock readings).
CLOCK = {"received_at", "processed_at", "latency_ms"}


def _requests(dataset, path, n, prefix):
    return replay_requests(read_data(dataset, path).records, n, T0, 60.0, prefix)


@pytest.mark.parametrize("model_name", ["credit_german", "credit_crx"])
def test_scored_batch_equals_scored_rows(model_name, german_path, crx_path):
    dataset = load_dataset(model_name)
    rules = load_rules(default_rules_path(model_name))
    requests = _requests(dataset, german_path if model_name == "credit_german" else crx_path,
                         400, "b")
    lines = [(f"m:{i}", json.dumps(r)) for i, r in enumerate(requests)]
    parsed = list(ParseRequestBatchFn("credit_scoring", "r1", 65536, dataset.fields)
                  .process(lines))
    [batch] = [b for b in parsed if not hasattr(b, "tag")]
    assert batch.num_rows == len(requests)  # crx rows with missing values included
    # Scores over the whole range, the thresholds exactly included.
    scores = np.linspace(0.0, 1.0, batch.num_rows).astype(np.float32)
    scores[:3] = [rules.approve_min_score, rules.refer_min_score, 0.5]
    schema = credit_rows.scored_schema(dataset.kinds)
    scored = credit_rows.scored_batch(batch, scores, "/reg/m/v0001/model.keras", CONTEXT,
                                      rules, schema).to_pylist()
    for i, (line, row) in enumerate(zip(lines, scored)):
        request = parse_request(line[1], line[0], row["received_at"], dataset.fields)
        expected = credit_rows.scored_row(credit_rows.request_key(request), request.fields,
                                          scores[i], "/reg/m/v0001/model.keras", CONTEXT, rules)
        assert {k: row[k] for k in expected} == expected
    decisions = {r["decision"] for r in scored}
    assert decisions == {"approve", "refer", "decline"}
    assert len({r["bank"] for r in scored}) > 2  # several banks and None


def test_vectorised_rules_agree_with_the_scalar_ones():
    rules = load_rules(default_rules_path("credit_german"))
    scores = np.concatenate([np.linspace(0, 1, 501),
                             [rules.approve_min_score, rules.refer_min_score]])
    assert list(decide_many(scores, rules)) == [decide(float(s), rules) for s in scores]
    fields = {"credit_amount": 15000.0, "duration_months": 96.0, "purpose": "A46"}
    for score in (0.5, 0.86, 0.9, 0.95):
        for change in ({}, {"credit_amount": None}, {"purpose": "A40"},
                       {"duration_months": 12.0, "credit_amount": 900.0}):
            one = dict(fields, **change)
            assert choose_bank(score, one, rules) == choose_banks(
                np.asarray([score]), {q: [one[n]] for q, n in rules.fields.items()}, rules)[0]


@pytest.mark.slow
def test_batch_pipeline_files_equal_the_per_request_path(credit_registry, german_path,
                                                         tmp_path):
    """End to end: every response and sampled row the pipeline writes equals what the
    per-request functions give for the same request and model."""
    ref = model_registry.resolve(credit_registry, "credit_german")
    dataset = dataset_from_manifest(ref.manifest)
    requests = _requests(dataset, german_path, 3000, "e2e")
    path = write_jsonl(tmp_path / "requests.jsonl", requests)
    credit_scoring.run(["--input", path, "--registry", credit_registry, "--output",
                        str(tmp_path / "out"), "--sample_rate", "0.5", "--run_id", "same"])
    rules = load_rules(default_rules_path("credit_german"))
    import keras

    model = keras.saving.load_model(ref.path)
    parsed = [parse_request(json.dumps(r), "x", READ, dataset.fields) for r in requests]
    scores = predict_scores(model, [p.fields for p in parsed], dataset.kinds)
    context = {"pipeline": "credit_scoring", "run_mode": "batch", "run_id": "same",
               "code_version": code_version(), "models": {ref.path: (ref.name, ref.version,
                                                                     ref.sha256)},
               "pii_key_id": privacy_for(dataset).key_id}
    expected = {p.request_id: credit_rows.scored_row(credit_rows.request_key(p), p.fields,
                                                     s, ref.path, context, rules)
                for p, s in zip(parsed, scores)}
    out = tmp_path / "out"
    for name, key in (("responses", "request_id"), ("predictions", "prediction_id")):
        table = ds.dataset(str(out / name), partitioning="hive").to_table()
        rows = table.to_pylist()
        assert len(rows) == (len(requests) if name == "responses" else
                             sum(keep_prediction(k, 0.5) for k in expected))
        for row in rows:
            want = expected[row[key]]
            for column, value in row.items():
                if column in CLOCK or column not in want:
                    continue
                if column == "score":
                    assert value == pytest.approx(want[column], abs=1e-6)
                else:
                    assert value == want[column], (column, row[key])
    files = sorted(os.path.relpath(os.path.join(d, f), out) for d, _, fs in os.walk(out)
                   for f in fs)
    assert files == [
        "predictions/pipeline=credit_scoring/model_name=credit_german/model_version=v0001/"
        f"dt={day}/same-all-p000-00000.parquet"
        for day in sorted({r["dt"] for r in expected.values()})] + [
        f"responses/model_name=credit_german/dt={day}/same-all-p000-00000.parquet"
        for day in sorted({r["dt"] for r in expected.values()})]


def _variants(good: dict, numeric: str, code: str) -> list:
    """Lines that are each wrong (or right) in one way, mixed in one batch."""
    huge = ('{"request_id": "big", "event_time": "2026-11-01T00:00:00Z", '
            f'"{numeric}": 1{"0" * 400}}}')
    return [
        good, dict(good, request_id="ok-int", **{numeric: 3}),
        dict(good, **{numeric: True}), dict(good, **{numeric: "12"}),
        dict(good, **{numeric: None}), dict(good, **{numeric: -1e12}),
        dict(good, **{numeric: 1e300}), dict(good, **{numeric: [1]}),
        json.dumps(good).replace(f'"{numeric}": ', f'"{numeric}": NaN, "x{numeric}": '),
        dict(good, **{code: ""}), dict(good, **{code: "   "}), dict(good, **{code: "A" * 500}),
        dict(good, **{code: 7}), dict(good, **{code: None}), dict(good, **{code: {"a": 1}}),
        dict(good, **{numeric: "x", code: 5}), huge, "", "[1]", '{"a": ', b"\xff\xfe",
        dict(good, request_id=""), dict(good, event_time="yesterday"),
        {k: v for k, v in good.items() if k != code}, dict(good, extra=1),
    ]


@pytest.mark.parametrize("model_name", ["credit_german", "credit_crx"])
def test_batch_parsing_gives_the_per_line_verdicts_and_messages(model_name, german_path,
                                                                 crx_path):
    dataset = load_dataset(model_name)
    path = german_path if model_name == "credit_german" else crx_path
    good = _requests(dataset, path, 1, "v")[0]
    numeric = next(f.name for f in dataset.fields if f.kind == "numeric" and f.max_value)
    code = next(f.name for f in dataset.fields if f.kind == "categorical")
    lines = [(f"l:{i}", v if isinstance(v, (str, bytes)) else json.dumps(v))
             for i, v in enumerate(_variants(good, numeric, code))]
    batch, failed = parse_requests(lines, READ, dataset.fields,
                                   request_batch_schema(dataset.fields))
    verdicts = {origin: (error.stage, str(error)) for origin, _, error in failed}
    verdicts.update({r["origin"]: "ok" for r in batch.to_pylist()})
    expected = {}
    for origin, line in lines:
        try:
            text = line.decode("utf-8") if isinstance(line, bytes) else line
            parse_request(text, origin, READ, dataset.fields)
            expected[origin] = "ok"
        except (RequestError, UnicodeDecodeError) as error:
            expected[origin] = (getattr(error, "stage", "parse"), str(error))
    utf8 = [o for o, v in expected.items() if v != "ok" and "codec" in v[1]]
    for origin in utf8:  # decode_line words the UTF-8 error itself
        assert verdicts[origin][1].startswith("not UTF-8 text")
        expected[origin] = verdicts[origin]
    assert verdicts == expected
    assert sum(v == "ok" for v in verdicts.values()) >= 2
