"""One operations page per model: its life across evaluation runs on one time axis.

A static HTML page (``index.html``, charts as inline SVG, no script, no network) with the
realized and estimated figures per window, drift and slice gaps, every decision with its
reasons, where production and shadow point, every alias move of the audit trail and a link to
each run's report. Every evaluation run rebuilds its output's page; ``beamline models page``
(``pipelines/operations.py``) builds one from several evaluation outputs (the demo's
scenarios, say).

Why matplotlib rather than a JavaScript chart library: the page must open in an auditor's
browser years from now, offline, with nothing to execute; matplotlib is already what the
reports draw with, and every charted figure is also in a table below the chart. What that
costs: no hover or zoom.

One time axis: a metric point stands at the start of its window (when the requests were
scored), a decision at the time it was made, an alias move at the time of its audit record.
Replayed or backfilled traffic therefore stands where its events happened, which may be long
before the decisions about it.
"""

import datetime
import html
import io
import json
import math
import os

import matplotlib

matplotlib.use("Agg")  # headless
import matplotlib.dates as mdates  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402

from models import registry as model_registry  # noqa: E402
from transforms.evaluation.history import estimate_table, series, value_of  # noqa: E402
from transforms.evaluation.join import ALL, ESTIMATED, SHADOW  # noqa: E402
from transforms.evaluation.outcome import EVALUATION, read_metric_rows  # noqa: E402
from transforms.evaluation.report import write_page as report_page  # noqa: E402
from transforms.evaluation.retraining import evidence_sentence  # noqa: E402

OPERATIONS = "operations"


def _time(text) -> datetime.datetime | None:
    if isinstance(text, datetime.datetime):
        value = text
    else:
        try:
            value = datetime.datetime.fromisoformat(str(text).replace("Z", "+00:00"))
        except ValueError:
            return None
    return value if value.tzinfo else value.replace(tzinfo=datetime.UTC)


def gather(evaluations: list[str], pipeline: str, model_name: str) -> dict:
    """Everything the page shows from evaluation output roots: {"sources": [{name, root,
    rows, decisions, reports}]} (one per root, in the given order)."""
    sources = []
    for root in evaluations:
        root = root.rstrip("/")
        decisions = []
        folder = os.path.join(root, EVALUATION, "decisions", f"pipeline={pipeline}",
                              f"model_name={model_name}")
        for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
            if name.endswith(".json"):
                with open(os.path.join(folder, name), encoding="utf-8") as handle:
                    decisions.append(json.load(handle))
        reports = {}
        folder = os.path.join(root, EVALUATION, "reports", pipeline, model_name)
        for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
            if os.path.exists(os.path.join(folder, name, "index.html")):
                reports[name] = os.path.join(folder, name, "index.html")
        sources.append({"name": os.path.basename(root) or root, "root": root,
                        "rows": read_metric_rows(root, pipeline, model_name),
                        "decisions": decisions, "reports": reports})
    return {"sources": sources}


def _moves(trail) -> list[dict]:
    return sorted(trail.moves, key=lambda m: m["seq"])


def _extra_panels(sources: list[dict]) -> list[tuple[str, list]]:
    """The panels under the headline metrics, only those with data: inputs drifted and the
    largest slice gap (credit), the share removed per radar (radar watched without truth).
    Each is (y label, [(kind, label, x, y)])."""
    drift, gaps, removed = [], [], []
    for source in sources:
        data = series(source)
        for (version, role), weeks in sorted(data["drift"].items()):
            starts = sorted(weeks)
            drift.append(("bar", f"{source['name']} {version} {role}",
                          [_time(s) for s in starts], [len(weeks[s]) for s in starts]))
        for (version, role), weeks in sorted(data["gaps"].items()):
            starts = sorted(weeks)
            gaps.append(("line", f"{source['name']} {version} {role}",
                         [_time(s) for s in starts], [weeks[s]["value"] for s in starts]))
        for (version, radar), days in sorted(data["removed_by_radar"].items()):
            starts = sorted(days)
            removed.append(("line", f"{source['name']} {version} {radar}",
                            [_time(s) for s in starts], [days[s]["value"] for s in starts]))
    return [(title, lines) for title, lines in (
        ("inputs drifted", drift), ("largest approval\ngap (not small)", gaps),
        ("echo removed\nper radar", removed)) if lines]


def chart(sources: list[dict], moves: list[dict], metrics: tuple[str, ...]) -> tuple[str, dict]:
    """The time-axis chart as inline SVG (a panel per headline metric, then ``_extra_panels``),
    and its axis span (for whoever reads positions)."""
    times = [_time(m["time"]) for m in moves]
    for source in sources:
        for r in source["rows"]:
            if r["window"] != ALL and r["window_start"] != ALL:
                times.append(_time(r["window_start"]))
        times += [_time(d["decided_at"]) for d in source["decisions"]]
    times = [t for t in times if t is not None]
    if not times:
        return "<p>Nothing evaluated yet.</p>", {}
    start, end = min(times), max(times)
    margin = max((end - start) * 0.04, datetime.timedelta(days=1))
    span = (start - margin, end + margin)
    extra = _extra_panels(sources)
    panels = len(metrics) + len(extra)
    fig, axes = plt.subplots(panels, 1, figsize=(11, 2.1 * panels), sharex=True, squeeze=False)
    axes = list(axes[:, 0])
    for source in sources:
        for (version, role), weeks in sorted(series(source)["figures"].items()):
            label = f"{source['name']} {version}" + (f" ({role})" if role != "served" else "")
            starts = sorted(weeks)
            x = [_time(s) for s in starts]
            for ax, metric in zip(axes, metrics):
                y = [value_of(weeks[s], (metric, None)) for s in starts]
                y = [float("nan") if v is None else v for v in y]
                if all(math.isnan(v) for v in y):
                    continue
                if role == ESTIMATED:
                    low = [value_of(weeks[s], (metric, "interval_low")) for s in starts]
                    high = [value_of(weeks[s], (metric, "interval_high")) for s in starts]
                    ax.fill_between(x, [float("nan") if v is None else v for v in low],
                                    [float("nan") if v is None else v for v in high],
                                    alpha=0.15)
                    ax.plot(x, y, linestyle="--", marker=".", label=label)
                else:
                    ax.plot(x, y, marker="o", markersize=3, label=label)
        for decision in source["decisions"]:
            axes[0].plot([_time(decision["decided_at"])], [0.03], marker="v", markersize=9,
                         transform=axes[0].get_xaxis_transform(),
                         color="#c0392b" if decision["retrain"] else "#1e7e34",
                         gid=f"decision-{decision['evaluation_run_id']}")
    for ax, metric in zip(axes, metrics):
        ax.set_ylabel(metric.replace("_", " "), fontsize=8)
    for ax, (title, lines) in zip(axes[len(metrics):], extra):
        ax.set_ylabel(title, fontsize=8)
        for kind, label, x, y in lines:
            if kind == "bar":
                ax.bar(x, y, width=3, alpha=0.6, label=label)
            else:
                ax.plot(x, y, marker="s", markersize=3, label=label)
    top = axes[0]
    for ax in axes:
        ax.set_xlim(*span)
        ax.tick_params(labelsize=7)
        for move in moves:
            colour = "#6c3483" if move["alias"] == "production" else "#7f8c8d"
            # The top panel's lines carry ids, so a reader (or a test) can find each move.
            ax.axvline(_time(move["time"]), color=colour, linewidth=1, linestyle=":",
                       gid=f"alias-move-{move['seq']}" if ax is top else None)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=6, loc="upper left", ncols=2)
    top.patch.set_gid("timeline-axes")
    for move in moves:
        top.annotate(f"{move['alias']} → {move['to']}", (_time(move["time"]), 1.0),
                     xycoords=("data", "axes fraction"), rotation=90, fontsize=6,
                     va="top", ha="right", color="#6c3483")
    axes[-1].xaxis.set_major_formatter(mdates.DateFormatter("%Y-%m-%d"))
    fig.autofmt_xdate()
    fig.tight_layout()
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg")
    plt.close(fig)
    svg = buffer.getvalue()
    svg = svg[svg.index("<svg"):]
    return svg, {"start": span[0].isoformat(), "end": span[1].isoformat()}


def runs_table(sources: list[dict], page_dir: str) -> str:
    runs = {}
    for source in sources:
        for r in source["rows"]:
            entry = runs.setdefault((source["name"], r["evaluation_run_id"]), {
                "at": r["evaluated_at"], "versions": set(), "windows": set(),
                "report": source["reports"].get(r["evaluation_run_id"])})
            if r["model_version"] != ALL:
                entry["versions"].add(r["model_version"] + (" (shadow)" if r["role"] == SHADOW
                                                            else ""))
            if r["window"] != ALL:
                entry["windows"].add(r["window_start"])
    body = []
    for (name, run_id), entry in sorted(runs.items(), key=lambda kv: str(kv[1]["at"])):
        link = (f"<a href='{html.escape(os.path.relpath(entry['report'], page_dir))}'>report"
                f"</a>" if entry["report"] else "–")
        windows = sorted(entry["windows"])
        body.append(f"<tr><td>{html.escape(name)}</td><td>{html.escape(run_id)}</td>"
                    f"<td>{html.escape(str(entry['at'])[:19])}</td>"
                    f"<td>{html.escape(', '.join(sorted(entry['versions'])))}</td>"
                    f"<td>{html.escape(windows[0] + ' to ' + windows[-1]) if windows else 'all'}"
                    f"</td><td>{link}</td></tr>")
    return ("<table id='runs'><tr><th>source</th><th>evaluation run</th><th>evaluated at</th>"
            "<th>versions</th><th>weeks</th><th>report</th></tr>" + "".join(body) + "</table>")


def decisions_table(sources: list[dict]) -> str:
    body = []
    for source in sources:
        for d in source["decisions"]:
            reasons = "; ".join(f"{c['name']}: {evidence_sentence(c)}" for c in d["checks"]
                                if c["fired"])
            verdict = "RETRAIN" if d["retrain"] else "no retraining"
            body.append(f"<tr><td>{html.escape(source['name'])}</td>"
                        f"<td>{html.escape(d['decided_at'][:19])}</td>"
                        f"<td>{html.escape(d['evaluation_run_id'])}</td>"
                        f"<td>{html.escape(d['model_version'])}</td>"
                        f"<td>{html.escape(d['window_start'])}</td><td>{verdict}</td>"
                        f"<td>{html.escape(d['reason'])}</td>"
                        f"<td>{html.escape(', '.join(d.get('alerts', [])) or '–')}</td>"
                        f"<td style='text-align:left'>{html.escape(reasons or '–')}</td></tr>")
    return ("<table id='decisions'><tr><th>source</th><th>decided at</th><th>run</th>"
            "<th>version</th><th>window</th><th>verdict</th><th>reason</th><th>alerts</th>"
            "<th>evidence of the rules that fired</th></tr>" + "".join(body) + "</table>")


def moves_table(moves: list[dict]) -> str:
    body = "".join(
        f"<tr><td>{m['seq']}</td><td>{html.escape(str(m['time'])[:19])}</td>"
        f"<td>{html.escape(m['alias'])}</td><td>{html.escape(str(m.get('from') or '–'))}</td>"
        f"<td>{html.escape(str(m['to']))}</td><td>{html.escape(str(m.get('by')))}</td>"
        f"<td style='text-align:left'>{html.escape(str(m.get('reason')))}</td>"
        f"<td style='text-align:left'>{html.escape(str(m.get('decision') or '–'))}</td></tr>"
        for m in moves)
    return ("<table id='alias-moves'><tr><th>record</th><th>time</th><th>alias</th><th>from"
            "</th><th>to</th><th>by</th><th>reason</th><th>decision record</th></tr>" + body
            + "</table>")




def write_page(directory: str, model_name: str, pipeline: str, sources: list[dict],
               registry: str, now: datetime.datetime, metrics: tuple[str, ...]) -> str:
    """Write ``<directory>/index.html`` (``metrics``: the headline figures charted); returns
    its path."""
    os.makedirs(directory, exist_ok=True)
    trail = model_registry.audit_trail(registry, model_name)
    moves = _moves(trail)
    aliases = model_registry.aliases_at(registry, model_name, now)
    svg, span = chart(sources, moves, metrics)
    serving = "".join(
        f"<tr><th>{html.escape(alias)}</th><td>{html.escape(r['to'])}</td>"
        f"<td>{html.escape(str(r['time'])[:19])}</td><td>{html.escape(str(r.get('by')))}</td>"
        f"<td style='text-align:left'>{html.escape(str(r.get('reason')))}</td></tr>"
        for alias, r in sorted(aliases.items()))
    problems = "".join(f"<p class='problem'>{html.escape(p)}</p>" for p in trail.problems)
    sections = [
        f"<h1>Operations: {html.escape(model_name)} ({html.escape(pipeline)})</h1>",
        f"<p>Built {html.escape(now.isoformat()[:19])} UTC from "
        f"{len(sources)} evaluation output(s): "
        f"{html.escape(', '.join(s['root'] for s in sources))}; registry "
        f"{html.escape(registry)}.</p>",
        "<h2>In service now</h2><table id='serving'><tr><th>alias</th><th>version</th>"
        "<th>since</th><th>by</th><th>reason</th></tr>" + serving + "</table>" + problems,
        "<h2>On one time axis</h2><p>Metric points stand at their window's start (when the "
        "requests were scored); dashed lines with a shaded band are estimates before labels "
        "with their 95 % interval; triangles under the first panel are retraining decisions "
        "(red: retrain) at the time they were made; dotted verticals are alias moves "
        "(purple: production).</p>",
        f"<div id='timeline' data-start='{span.get('start', '')}' "
        f"data-end='{span.get('end', '')}'>{svg}</div>",
        "<h2>Estimated before labels, realized after</h2><p>An estimate needs no label; its "
        "interval is where the realized figure should fall 95 times in 100 if the calibrated "
        "probabilities hold. It cannot see a change of the outcomes themselves for unchanged "
        "inputs (concept shift): there the error below is the only witness, once labels "
        "arrive.</p>" + estimate_table(sources),
        "<h2>Evaluation runs</h2>" + runs_table(sources, directory),
        "<h2>Decisions</h2>" + decisions_table(sources),
        "<h2>Alias moves (audit trail)</h2>" + moves_table(moves),
    ]
    return report_page(directory, f"{model_name} operations", sections)
