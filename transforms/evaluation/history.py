"""The newest figure of every window across evaluation runs, and the table of estimates before
labels beside the realized figures (the report and the operations page both show it)."""

import html
import math

from transforms.evaluation.join import ALL, ESTIMATED

ESTIMATE_TABLE_METRICS = ("auc", "accuracy", "expected_cost_per_applicant")


def _fmt(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.{digits}f}" if isinstance(value, float) else html.escape(str(value))


def latest_cells(rows: list[dict]) -> dict:
    """(version, role, window_start, slice, slice_value, metric, detail) -> the newest run's
    row, weekly and daily windows only."""
    newest: dict[tuple, dict] = {}
    for r in rows:
        if r["window"] == ALL or r["model_version"] == ALL:
            continue
        key = (r["model_version"], r["role"], r["window_start"], r["slice"], r["slice_value"],
               r["metric"], r["detail"])
        if key not in newest or r["evaluated_at"] > newest[key]["evaluated_at"]:
            newest[key] = r
    return newest


def value_of(cells: dict, key: tuple):
    row = cells.get(key)
    return None if row is None else row["value"]


def series(source: dict) -> dict:
    """What the charts and the estimate table need, per window: ``figures`` per (version,
    role) the overall figures; ``drift`` the drifted inputs, ``gaps`` the largest approval gap
    of a group not flagged small, ``removed_by_radar`` per (version, radar) the share of echo
    removed over all tilts (radar watched without truth)."""
    cells = latest_cells(source["rows"])
    out: dict[tuple, dict] = {}
    for (version, role, start, slice_name, _, metric, detail), row in cells.items():
        if slice_name != ALL or detail not in (None, "interval_low", "interval_high", "error"):
            continue
        out.setdefault((version, role), {}).setdefault(start, {})[(metric, detail)] = row
    drift: dict[tuple, dict] = {}
    gaps: dict[tuple, dict] = {}
    watched: dict[tuple, dict] = {}
    for (version, role, start, slice_name, group, metric, detail), row in cells.items():
        if role == ESTIMATED:
            continue
        if slice_name == "radar" and detail == "all tilts" and metric == "removed_share" \
                and row["value"] is not None:
            watched.setdefault((version, group), {})[start] = row
        if slice_name == "drift" and metric in ("psi", "linf") and row["flag"] == "drifted":
            drift.setdefault((version, role), {}).setdefault(start, set()).add(row["detail"])
        if metric == "approval_rate_diff" and slice_name not in (ALL, "drift") \
                and row["flag"] != "small" and row["value"] is not None:
            best = gaps.setdefault((version, role), {}).get(start)
            if best is None or abs(row["value"]) > abs(best["value"]):
                gaps[(version, role)][start] = row
    return {"figures": out, "drift": drift, "gaps": gaps, "removed_by_radar": watched}


def estimate_table(sources: list[dict]) -> str:
    """Per source, version and week: each estimate with its interval beside the realized
    figure and the error, once the labels are in."""
    body = []
    for source in sources:
        data = series(source)["figures"]
        for (version, role), weeks in sorted(data.items()):
            if role != ESTIMATED:
                continue
            realized = data.get((version, "served"), {})
            for start in sorted(weeks):
                cells = weeks[start]
                seen = realized.get(start, {})
                rows = value_of(seen, ("predictions", None))
                labelled = value_of(seen, ("labelled", None))
                row = [html.escape(source["name"]), html.escape(version), start,
                       _fmt(rows, 0), _fmt(labelled, 0)]
                for metric in ESTIMATE_TABLE_METRICS:
                    if (metric, None) not in cells:
                        row += ["–", "–", "–"]
                        continue
                    point = value_of(cells, (metric, None))
                    low = value_of(cells, (metric, "interval_low"))
                    high = value_of(cells, (metric, "interval_high"))
                    error = cells.get((metric, "error"))
                    row += [f"{_fmt(point)} [{_fmt(low)}, {_fmt(high)}]",
                            _fmt(value_of(seen, (metric, None))) if error else "no labels yet",
                            f"{_fmt(error['value'])} ({error['flag']})" if error else "–"]
                body.append("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>")
    if not body:
        return "<p>No estimates (no credit model with scores evaluated).</p>"
    head = ["source", "version", "week", "rows", "labelled"] + [
        f"{m} {part}" for m in ESTIMATE_TABLE_METRICS
        for part in ("estimate [95 %]", "realized", "error")]
    return ("<table id='estimates'><tr>" + "".join(f"<th>{h}</th>" for h in head)
            + "</tr>" + "".join(body) + "</table>")
