"""The evaluation query a warehouse user runs: rendered per data set, run on DuckDB over the
Hive-partitioned Parquet folders, equal to the Beam evaluation's figures, and transpiled to
BigQuery's dialect by sqlglot (nothing here can reach BigQuery)."""

import pathlib

import pyarrow.dataset as ds
import pytest

from models.config import default_path, load_evaluation_config
from models.credit.replay import write_jsonl
from models.credit.scenarios import generate, parse_scenarios
from pipelines import credit_scoring, evaluate
from tests.conftest import ROOT, german_scenarios, load_german
from transforms.evaluation.query import render_credit_query

COMPARED = ("predictions", "labelled", "approval_rate", "log_loss", "brier", "auc",
            "approval_rate_diff", "tpr_diff")


@pytest.mark.parametrize("model_name", ["credit_german", "credit_crx"])
def test_the_shipped_queries_are_rendered_from_the_current_configuration(model_name):
    config = load_evaluation_config(default_path("evaluation", model_name))
    shipped = (ROOT / "sql" / f"{model_name}_evaluation.sql").read_text(encoding="utf-8")
    assert shipped == render_credit_query(model_name, config), (
        f"sql/{model_name}_evaluation.sql is stale: python -m transforms.evaluation.query "
        f"{model_name} > sql/{model_name}_evaluation.sql")


@pytest.mark.parametrize("model_name", ["credit_german", "credit_crx"])
def test_the_query_transpiles_to_bigquery(model_name):
    import sqlglot

    text = (ROOT / "sql" / f"{model_name}_evaluation.sql").read_text(encoding="utf-8")
    [bigquery] = sqlglot.transpile(text, read="duckdb", write="bigquery", pretty=True)
    # It parses back as BigQuery, and what differs between the dialects was translated.
    sqlglot.parse_one(bigquery, read="bigquery")
    assert "ISODOW" not in bigquery and "DAYOFWEEK" in bigquery  # weeks start on Monday
    assert "`window`" in bigquery and "QUALIFY" in bigquery
    assert "VARCHAR" not in bigquery and "STRING" in bigquery


def duckdb_figures(query: str, predictions: str, truth: str) -> dict:
    """{(version, window, window_start, slice, slice_value, metric): (value, count)}."""
    import duckdb

    connection = duckdb.connect()
    connection.execute("SET TimeZone = 'UTC'")
    connection.execute(
        f"CREATE VIEW predictions AS SELECT * FROM read_parquet('{predictions}/**/*.parquet', "
        f"hive_partitioning = true, union_by_name = true)")
    connection.execute(
        f"CREATE VIEW truth AS SELECT prediction_id, TRY_CAST(label AS DOUBLE) AS label, "
        f"TRY_CAST(label_time AS TIMESTAMPTZ) AS label_time FROM read_json_auto('{truth}', "
        f"format = 'newline_delimited', ignore_errors = true)")
    rows = connection.execute(query).fetchall()
    return {(r[1], r[2], r[3], r[4], r[5], r[6]): (r[7], r[8]) for r in rows}


@pytest.mark.slow
def test_duckdb_figures_equal_the_beam_evaluation(credit_registry, german_path, tmp_path):
    records, labels = load_german(german_path)
    scenarios = german_scenarios()
    requests, truth = generate(records, labels, scenarios,
                               parse_scenarios("young_no_history_surge", scenarios), weeks=3,
                               per_week=250, shift_week=1, seed=11)
    # A label given twice (the later one counts), and lines the evaluation must skip.
    first = dict(truth[0])
    truth.append(dict(first, label=1 - first["label"], label_time="2027-01-01T00:00:00+00:00"))
    write_jsonl(requests, str(tmp_path / "requests.jsonl"))
    write_jsonl(truth, str(tmp_path / "truth.jsonl"))
    with open(tmp_path / "truth.jsonl", "a", encoding="utf-8") as f:
        f.write('{"prediction_id": "x", \n{"prediction_id": "y", "label": 2, '
                '"label_time": "2026-10-01T00:00:00+00:00"}\n')
    out = str(tmp_path / "out")
    credit_scoring.run(["--input", str(tmp_path / "requests.jsonl"), "--registry",
                        credit_registry, "--output", out, "--sample_rate", "0.6"])
    evaluate.run(["--pipeline", "credit_scoring", "--predictions", out, "--truth",
                  str(tmp_path / "truth.jsonl"), "--registry", credit_registry, "--output", out,
                  "--run_id", "eval-sql"])
    beam_rows = ds.dataset(f"{out}/evaluation/metrics", partitioning="hive").to_table()
    beam = {(r["model_version"], r["window"], r["window_start"], r["slice"], r["slice_value"],
             r["metric"]): (r["value"], r["count"]) for r in beam_rows.to_pylist()
            if r["metric"] in COMPARED and r["role"] == "served"}
    query = (ROOT / "sql" / "credit_german_evaluation.sql").read_text(encoding="utf-8")
    folder = pathlib.Path(out) / "predictions" / "pipeline=credit_scoring"
    sql = duckdb_figures(query, str(folder / "model_name=credit_german"),
                         str(tmp_path / "truth.jsonl"))
    assert {k[1] for k in sql} == {"all", "week"} and len({k[2] for k in sql}) == 4
    compared = [k for k, (v, _) in sql.items() if v is not None]
    assert {k[5] for k in compared} == set(COMPARED)
    assert sum(k[5] == "tpr_diff" for k in compared) >= 4 * 10  # 4 windows, 10+ groups
    # Every figure the query gives is Beam's; every defined Beam figure is in the query.
    for key, (value, count) in sql.items():
        assert key in beam, key
        expected, expected_count = beam[key]
        assert count == expected_count, key
        if expected is None:
            assert value is None, (key, value)
        else:
            assert value == pytest.approx(expected, abs=1e-9), key
    # (Per slice the query gives the gaps; Beam also gives each group's own figures.)
    missing = [k for k, (v, _) in beam.items() if v is not None and k not in sql
               and (k[3] == "all" or k[5] in ("approval_rate_diff", "tpr_diff"))]
    assert not missing, missing[:5]
