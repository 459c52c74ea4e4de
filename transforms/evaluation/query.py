"""The credit evaluation as SQL for a warehouse: ``sql/credit_evaluation.sql.j2`` rendered with
one data set's slices (from its evaluation configuration) into ``sql/<model>_evaluation.sql``.

The rendered file is plain SQL (DuckDB's dialect, which sqlglot transpiles to BigQuery's) over
two relations the analyst defines, ``predictions`` and ``truth``; the README shows both for
DuckDB over the Parquet folders and for BigQuery external tables.

Usage::

    python -m transforms.evaluation.query credit_german > sql/credit_german_evaluation.sql
"""

import argparse
import pathlib
import sys

import jinja2

from models.config import default_path, load_evaluation_config
from models.exit_codes import run_command
from models.provenance import PROJECT_ROOT

SQL_FOLDER = pathlib.Path(PROJECT_ROOT) / "sql"
TEMPLATE = "credit_evaluation.sql.j2"


def literal(text) -> str:
    """A SQL string literal (quotes doubled)."""
    return "'" + str(text).replace("'", "''") + "'"


def identifier(name: str) -> str:
    """A quoted column name (data set fields may be any case, or a reserved word)."""
    return '"' + name.replace('"', '""') + '"'


def slice_expression(dimension: dict) -> str:
    """The SQL of ``models.slices.slice_value`` for one slice dimension: missing, the
    configured group or band (first match), else other; ``by_value`` keeps the value."""
    column = identifier(dimension["field"])
    if dimension.get("by_value"):
        return f"COALESCE(CAST({column} AS VARCHAR), 'missing')"
    cases = [f"WHEN {column} IS NULL THEN 'missing'"]
    if "groups" in dimension:
        for group, codes in dimension["groups"].items():
            listed = ", ".join(literal(c) for c in codes)
            cases.append(f"WHEN CAST({column} AS VARCHAR) IN ({listed}) THEN {literal(group)}")
    else:
        for band in dimension["bands"]:
            bounds = [f"{column} >= {float(band['min'])!r}" if "min" in band else None,
                      f"{column} < {float(band['max'])!r}" if "max" in band else None]
            test = " AND ".join(b for b in bounds if b)
            cases.append(f"WHEN {test} THEN {literal(band['name'])}")
    return "CASE\n           " + "\n           ".join(cases) + "\n           ELSE 'other' END"


def render_credit_query(model_name: str, config: dict) -> str:
    """The evaluation query of one credit model under its evaluation configuration."""
    environment = jinja2.Environment(loader=jinja2.FileSystemLoader(SQL_FOLDER),
                                     undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    slices = [{"name": literal(d["name"])[1:-1], "expression": slice_expression(d)}
              for d in config["slices"]]
    fields = sorted({identifier(d["field"]) for d in config["slices"]})
    return environment.get_template(TEMPLATE).render(
        header=f"Rendered from sql/{TEMPLATE} by `python -m transforms.evaluation.query "
               f"{model_name}` (evaluation configuration {config['config_version']}).",
        model_name=literal(model_name)[1:-1], approve_decision=config["approve_decision"],
        slices=slices, slice_fields=fields)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model_name", help="credit model whose <config>/evaluation/<name>.json "
                                           "gives the slices")
    parser.add_argument("--config", default=None, help="another evaluation configuration")
    args = parser.parse_args(argv)
    config = load_evaluation_config(args.config or default_path("evaluation", args.model_name))
    sys.stdout.write(render_credit_query(args.model_name, config))
    return 0


if __name__ == "__main__":
    sys.exit(run_command(main))
