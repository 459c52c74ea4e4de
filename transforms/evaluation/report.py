"""A static HTML report of an evaluation run: plots as PNG files beside one index.html.

Self-contained (relative links only), so it can be copied to a bucket or opened from disk.
Sections: join counts, the retraining decision, metric history per model version, the slice
(fairness) table with its flags, drift per feature, calibration, and for radar a few truth vs
prediction masks.
"""

import html
import json
import math
import os

import matplotlib

matplotlib.use("Agg")  # headless: no display on workers or CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from transforms.evaluation.history import estimate_table  # noqa: E402
from transforms.evaluation.join import (  # noqa: E402
    ALL,
    ESTIMATED,
    SHADOW,
    served_rows,
    version_label,
)
from transforms.evaluation.retraining import evidence_sentence  # noqa: E402

SLICE_COLUMNS = ("size", "approval_rate", "approval_rate_ratio", "approval_rate_diff", "tpr",
                 "tpr_diff", "fpr", "fpr_diff", "auc", "good_rate", "pod", "far", "csi")


def _fmt(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float) and not value.is_integer():
        return f"{value:.3f}"
    return f"{value:g}" if isinstance(value, float) else html.escape(str(value))


def latest_history(history: list[dict]) -> list[dict]:
    """Per (version, window, slice, metric, detail) the figure of the newest evaluation run."""
    newest: dict[tuple, dict] = {}
    for r in history:
        key = (version_label(r), r["window"], r["window_start"], r["slice"],
               r["slice_value"], r["metric"], r["detail"])
        if key not in newest or r["evaluated_at"] > newest[key]["evaluated_at"]:
            newest[key] = r
    return list(newest.values())


def plot_history(history: list[dict], metrics: tuple[str, ...], path: str) -> bool:
    """One panel per metric: value per window, a line per model version. False if no data."""
    rows = [r for r in latest_history(history) if r["slice"] == ALL and r["window"] != ALL
            and r["metric"] in metrics and r["value"] is not None]
    if not rows:
        return False
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.2), squeeze=False)
    for ax, name in zip(axes[0], metrics):
        for version in sorted({version_label(r) for r in rows}):
            points = sorted((r["window_start"], r["value"]) for r in rows
                            if r["metric"] == name and version_label(r) == version)
            if points:
                ax.plot([p[0] for p in points], [p[1] for p in points], marker="o",
                        label=version)
        ax.set_title(name)
        ax.tick_params(axis="x", labelrotation=45, labelsize=7)
        if ax.lines:
            ax.legend(fontsize=7)
        else:  # e.g. a cost figure of a data set without error costs
            ax.text(0.5, 0.5, "not available", ha="center", va="center",
                    transform=ax.transAxes, color="grey")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


def plot_drift(rows: list[dict], path: str, title: str) -> bool:
    """PSI per feature with its limit; drifted features in red."""
    psi = {r["detail"]: r for r in rows if r["slice"] == "drift" and r["metric"] == "psi"}
    if not psi:
        return False
    limits = {r["detail"]: r["value"] for r in rows
              if r["slice"] == "drift" and r["metric"] == "psi_limit"}
    drifted = drifted_features(rows)
    names = sorted(psi, key=lambda n: -(psi[n]["value"] or 0.0))
    values = [psi[n]["value"] or 0.0 for n in names]
    colors = ["#c0392b" if n in drifted else "#5d7fa3" for n in names]
    fig, ax = plt.subplots(figsize=(7, 0.28 * len(names) + 1.2))
    ax.barh(names[::-1], values[::-1], color=colors[::-1])
    for i, name in enumerate(names[::-1]):
        if name in limits:
            ax.plot([limits[name]] * 2, [i - 0.4, i + 0.4], color="black", lw=1)
    ax.set_xlabel("PSI vs training (black tick: PSI limit; red: a figure over its limit)")
    ax.set_title(title, fontsize=9)
    ax.tick_params(axis="y", labelsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


def drifted_features(rows: list[dict]) -> set[str]:
    """Features with any drift figure over its limit."""
    return {r["detail"] for r in rows if r["slice"] == "drift" and r["flag"] == "drifted"}


def drift_table(rows: list[dict], table_id: str) -> str:
    """Every feature's drift figures and limits, drifted ones first."""
    figures: dict[str, dict] = {}
    for r in rows:
        if r["slice"] == "drift":
            entry = figures.setdefault(r["detail"], {"kind": r["slice_value"]})
            entry[r["metric"]] = r["value"]
            entry["count"] = r["count"]
    if not figures:
        return "<p>No drift figures (the model's manifest has no training statistics).</p>"
    drifted = drifted_features(rows)
    columns = ("psi", "psi_limit", "psi_noise_floor", "linf", "linf_limit", "js", "count")
    head = "".join(f"<th>{c}</th>" for c in ("feature", "kind", *columns, "drifted"))
    body = "".join(
        f"<tr class='{'drifted' if name in drifted else ''}'><td>{html.escape(name)}</td>"
        f"<td>{html.escape(entry['kind'])}</td>"
        + "".join(f"<td>{_fmt(entry.get(c))}</td>" for c in columns)
        + f"<td>{'DRIFTED' if name in drifted else ''}</td></tr>"
        for name, entry in sorted(figures.items(), key=lambda kv: (kv[0] not in drifted,
                                                                   -(kv[1].get("psi") or 0))))
    return f"<table id='{table_id}'><tr>{head}</tr>{body}</table>"


def plot_calibration(rows: list[dict], path: str) -> bool:
    """Mean score vs observed good rate per bin, against the diagonal."""
    mean = {r["detail"]: r for r in rows if r["slice"] == ALL
            and r["metric"] == "calibration_mean_score"}
    observed = {r["detail"]: r["value"] for r in rows if r["slice"] == ALL
                and r["metric"] == "calibration_observed_good"}
    bins = sorted(set(mean) & set(observed))
    if not bins:
        return False
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.plot([0, 1], [0, 1], color="grey", ls="--", lw=1)
    ax.plot([mean[b]["value"] for b in bins], [observed[b] for b in bins], marker="o")
    for b in bins:
        ax.annotate(str(mean[b]["count"]), (mean[b]["value"], observed[b]), fontsize=6)
    ax.set_xlabel("mean score (P good)")
    ax.set_ylabel("observed good rate")
    ax.set_title("calibration (labels: rows per bin)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


def plot_masks(examples: list[tuple[str, np.ndarray, np.ndarray]], path: str) -> bool:
    """Truth vs predicted removal masks of a few sweeps (range on x, azimuth on y)."""
    if not examples:
        return False
    fig, axes = plt.subplots(len(examples), 2, figsize=(8, 2.4 * len(examples)), squeeze=False)
    for (name, truth, predicted), row in zip(examples, axes):
        for ax, mask, label in zip(row, (truth, predicted), ("truth", "predicted")):
            ax.imshow(mask, aspect="auto", cmap="Greys", interpolation="nearest")
            ax.set_title(f"{name} {label}", fontsize=8)
            ax.set_xlabel("gate")
            ax.set_ylabel("azimuth cell")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return True


def slice_table(rows: list[dict], table_id: str) -> str:
    """HTML table of every slice group with its figures and flags."""
    groups: dict[tuple, dict] = {}
    for r in rows:
        if r["slice"] in (ALL, "drift", "join", "sweep", "radar"):
            continue
        entry = groups.setdefault((r["slice"], r["slice_value"]), {"flag": r["flag"]})
        entry[r["metric"]] = r["value"]
    if not groups:
        return "<p>No slices configured or no labelled rows.</p>"
    columns = [c for c in SLICE_COLUMNS if any(c in g for g in groups.values())]
    head = "".join(f"<th>{c}</th>" for c in ("slice", "group", *columns, "flag"))
    body = []
    for (name, group), figures in sorted(groups.items()):
        flag = figures.get("flag") or ""
        css = {"small": "small", "significant": "significant"}.get(flag, "")
        cells = "".join(f"<td>{_fmt(figures.get(c))}</td>" for c in columns)
        flag_text = {"small": "small: not significant"}.get(flag, flag)
        body.append(f"<tr class='{css}'><td>{html.escape(name)}</td>"
                    f"<td>{html.escape(group)}</td>{cells}<td>{html.escape(flag_text)}</td></tr>")
    return f"<table id='{table_id}'><tr>{head}</tr>{''.join(body)}</table>"


def overall_table(rows: list[dict]) -> str:
    """Overall figures per model version and window."""
    cells: dict[tuple, dict] = {}
    for r in rows:
        if r["slice"] == ALL and r["detail"] is None:
            cells.setdefault((version_label(r), r["window"], r["window_start"]), {})[
                r["metric"]] = r["value"]
    if not cells:
        return ""
    metrics = sorted({m for figures in cells.values() for m in figures})
    head = "".join(f"<th>{m}</th>" for m in ("model_version", "window", *metrics))
    body = "".join(
        f"<tr><td>{html.escape(v)}</td><td>{html.escape(w if w == ALL else f'{w} {s}')}</td>"
        + "".join(f"<td>{_fmt(figures.get(m))}</td>" for m in metrics) + "</tr>"
        for (v, w, s), figures in sorted(cells.items()))
    return f"<table><tr>{head}</tr>{body}</table>"


_STYLE = """
body { font-family: sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; font-size: 12px; margin-bottom: 1em; }
td, th { border: 1px solid #ccc; padding: 2px 6px; text-align: right; }
th { background: #eee; }
tr.small { color: #888; font-style: italic; }
tr.significant td:last-child, tr.drifted td:last-child { color: #c0392b; font-weight: bold; }
.retrain { color: #c0392b; } .keep { color: #1e7e34; }
.problem { color: #c0392b; font-weight: bold; }
"""


def _model_suffix(summary: dict) -> str:
    model = summary.get("model_name")
    return f" ({html.escape(model)})" if model else ""


def _share(value) -> str:
    return "–" if value is None else f"{value:.1%}"


def reference_section(reference: dict) -> str:
    """Real volumes against reference algorithms (no truth there): the newest comparison's
    per-volume figures and a link to its page."""
    body = "".join(
        f"<tr><td style='text-align:left'>{html.escape(str(v['volume_id']))}</td>"
        f"<td style='text-align:left'>{html.escape(str(v['pair']))}</td><td>{_fmt(v['pod'])}</td>"
        f"<td>{_fmt(v['far'])}</td><td>{_fmt(v['csi'])}</td>"
        f"<td>{_share(v.get('weather_removed_share'))}</td></tr>"
        for v in reference.get("volumes", []))
    return (f"<h2>Real volumes against reference algorithms (model "
            f"{html.escape(str(reference.get('model_version')))})</h2>"
            f"<p>No per-gate truth exists for real volumes; the UNet's removed class against "
            f"wradlib's fuzzy echo classification, the RHOHV rule and their consensus "
            f"(run {html.escape(str(reference.get('run_id')))}; per sweep, per range band and "
            f"the masks: <a href='{html.escape(reference['link'])}'>its report</a>).</p>"
            f"<table><tr><th>volume</th><th>pair</th><th>POD</th><th>FAR</th><th>CSI</th>"
            f"<th>weather removed</th></tr>{body}</table>")


def monitoring_table(rows: list[dict], table_id: str) -> str:
    """Radar watched without truth: per radar and tilt, the removed share against the radar's
    reference period and the input moments that moved (``radar_monitoring``)."""
    cells: dict[tuple, dict] = {}
    for r in rows:
        if r["slice"] == "radar":
            cells.setdefault((r["slice_value"], r["detail"]), {})[r["metric"]] = r
    if not cells:
        return ""
    body = []
    for (radar, tilt), figures in sorted(cells.items(), key=lambda kv: (
            kv[0][0], kv[0][1] != "all tilts", kv[0][1])):
        def value(name, figures=figures):
            return figures[name]["value"] if name in figures else None
        change = figures.get("removed_share_change")
        moved = sorted(f"{name[5:-6].upper()} {row['value']:+.1f} sd" for name, row in
                       figures.items() if name.endswith("_shift") and row["flag"] == "drifted")
        uncertain = figures.get("qc_uncertain_share_change")
        flags = sorted({f"{name} {row['flag']}" for name, row in (
            ("removed", change), ("uncertain", uncertain)) if row and row["flag"]})
        css = "drifted" if flags or moved else ""
        body.append(
            f"<tr class='{css}'><td>{html.escape(radar)}</td><td>{html.escape(str(tilt))}</td>"
            f"<td>{_fmt(value('sweeps'))}</td><td>{_share(value('removed_share_reference'))}"
            f"</td><td>{_share(value('removed_share'))}</td>"
            f"<td>{_fmt(value('removed_share_change'))}</td>"
            f"<td>{_share(value('qc_uncertain_share'))}</td>"
            f"<td>{_share(value('class_share_biological'))}</td>"
            f"<td>{_share(value('class_share_clutter_noise'))}</td>"
            f"<td style='text-align:left'>{html.escape(', '.join(moved) or '–')}</td>"
            f"<td>{html.escape(', '.join(flags))}</td></tr>")
    return (f"<table id='{table_id}'><tr><th>radar</th><th>tilt</th><th>sweeps</th>"
            f"<th>removed (reference)</th><th>removed</th><th>change</th><th>QC uncertain</th>"
            f"<th>biological</th>"
            f"<th>clutter / noise</th><th>moments moved</th><th>flag</th></tr>"
            + "".join(body) + "</table>")


def write_report(directory: str, summary: dict, rows: list[dict], history: list[dict],
                 decision: dict | None = None, mask_examples=None,
                 history_metrics: tuple[str, ...] = ("auc",), reference: dict | None = None
                 ) -> str:
    """Write index.html, its PNGs and summary.json into ``directory``; returns the html path.

    Args:
        directory: the report folder (created).
        summary: what the run evaluated (pipeline, run id, inputs, join counts).
        rows: this run's metric rows.
        history: every metric row of this pipeline so far (this run included).
        decision: the retraining decision record, if one was made.
        mask_examples: radar only, [(prediction id, truth mask, predicted mask)].
        history_metrics: the metrics charted over time (the capability's headline figures).
        reference: the newest comparison with reference algorithms on real volumes (radar),
            shown beside the figures against truth.
    """
    os.makedirs(directory, exist_ok=True)
    pipeline = summary["pipeline"]
    sections = [f"<h1>Evaluation of {html.escape(pipeline)}{_model_suffix(summary)}</h1>",
                f"<p>Run <code>{html.escape(summary['evaluation_run_id'])}</code> at "
                f"{html.escape(summary['evaluated_at'])}. Machine-readable: "
                f"<a href='summary.json'>summary.json</a>. Evaluation configuration: "
                f"{html.escape(str(summary.get('config')))}. Every run of the model on one "
                f"time axis: <a href='../../../../operations/"
                f"{html.escape(summary.get('model_name') or '')}/index.html'>its operations "
                f"page</a>.</p>"]
    join = summary.get("join", {})
    sections.append("<h2>Join of predictions and ground truth</h2><table>" + "".join(
        f"<tr><th>{html.escape(k)}</th><td>{v}</td></tr>" for k, v in join.items())
        + "</table>")
    if decision is not None:
        css = "retrain" if decision["retrain"] else "keep"
        verdict = "RETRAIN" if decision["retrain"] else "no retraining"
        checks = "".join(
            f"<tr><td>{html.escape(c['name'])}</td><td>{c['type']}</td>"
            f"<td>{('alert' if c.get('action') == 'alert' else 'fired') if c['fired'] else ''}"
            f"</td>"
            f"<td style='text-align:left'>{html.escape(evidence_sentence(c))}</td></tr>"
            for c in decision["checks"])
        sections.append(
            f"<h2>Retraining decision: <span class='{css}'>{verdict}</span></h2>"
            f"<p>{html.escape(decision['reason'])}; alerts for a person: "
            f"{html.escape(', '.join(decision.get('alerts', [])) or 'none')}; "
            f"model {html.escape(decision['model_version'])}"
            f", window {html.escape(decision['window_start'])}, "
            f"{decision['labels_in_window']} labels. Command: "
            f"<code>{html.escape(decision['command'])}</code></p>"
            f"<table><tr><th>rule</th><th>type</th><th>fired / alert</th><th>evidence</th></tr>"
            f"{checks}</table>")

    images = []
    if plot_history(history, history_metrics,
                    os.path.join(directory, "history.png")):
        images.append(("Metrics per window and model version", "history.png"))
    current = [r for r in served_rows(rows) if r["model_version"] != ALL]
    versions = sorted({r["model_version"] for r in current})
    if versions:
        newest = versions[-1]
        own = [r for r in current if r["model_version"] == newest]
        starts = sorted({r["window_start"] for r in own if r["window"] != ALL})
        latest = [r for r in own if starts and r["window_start"] == starts[-1]]
        whole = [r for r in own if r["window"] == ALL]
        if plot_drift(latest or whole, os.path.join(directory, "drift_latest.png"),
                      f"{newest}, window {starts[-1] if starts else ALL}"):
            images.append((f"Drift, latest window ({starts[-1] if starts else ALL})",
                           "drift_latest.png"))
        if plot_drift(whole, os.path.join(directory, "drift_all.png"), f"{newest}, all"):
            images.append(("Drift, whole period", "drift_all.png"))
        if plot_calibration(whole, os.path.join(directory, "calibration.png")):
            images.append(("Calibration, whole period", "calibration.png"))
        # Shadow versions (same requests, their answers) side by side with the served one.
        sections.append("<h2>Overall</h2>" + overall_table(
            [r for r in rows if r["model_version"] != ALL]))
        sections.append(f"<h2>Slices (model {html.escape(newest)}, whole period)</h2>"
                        + slice_table(whole, "slices-all")
                        + ("<p>Gaps are against everyone outside the group. Grey rows are too "
                           "small to judge; red flags a significant approval-rate gap.</p>"
                           if any(r["metric"] == "approval_rate_diff" for r in whole)
                           else ""))
        if any(r["slice"] == "radar" for r in own):
            newest_window = html.escape(starts[-1] if starts else ALL)
            sections.append(
                f"<h2>Watched without truth (latest window {newest_window})</h2>"
                "<p>Each radar against its own reference period (its first days of sampled "
                "sweeps, or the configured dates): the share of echo removed and the class mix "
                "per tilt, and the input moments' sweep means in reference standard "
                "deviations. A shift asks a person to look; it does not say the QC is "
                "wrong.</p>" + monitoring_table(latest or whole, "monitoring-latest")
                + "<h2>Watched without truth (whole period)</h2>"
                + monitoring_table(whole, "monitoring-all"))
        if any(r.get("role") == ESTIMATED for r in rows):
            sections.append(
                "<h2>Estimated before labels, realized after</h2><p>From the served "
                "version's calibrated scores (CBPE); the interval is where the realized "
                "figure should fall 95 times in 100 if the calibration holds; a change of the "
                "outcomes for unchanged inputs is invisible to it.</p>"
                + estimate_table([{"name": "this run", "rows": rows}]))
        if latest:
            sections.append(f"<h2>Slices (latest window {html.escape(starts[-1])})</h2>"
                            + slice_table(latest, "slices-latest"))
        for shadow in sorted({r["model_version"] for r in rows if r.get("role") == SHADOW}):
            mine = [r for r in rows if r.get("role") == SHADOW and r["model_version"] == shadow
                    and r["window"] == ALL]
            sections.append(f"<h2>Slices of shadow {html.escape(shadow)} on the same requests "
                            f"(whole period)</h2>" + slice_table(mine, f"slices-shadow-{shadow}"))
        if any(r["slice"] == "drift" for r in own):
            sections.append(f"<h2>Drift (latest window {html.escape(starts[-1] if starts else ALL)}"
                            f")</h2>" + drift_table(latest or whole, "drift-latest")
                            + "<p>A limit is the configured one, raised to the figure's "
                              "99 % sampling-noise floor for the window's row count.</p>"
                            + "<h2>Drift (whole period)</h2>" + drift_table(whole, "drift-all"))
    if reference:
        sections.append(reference_section(reference))
    if plot_masks(mask_examples or [], os.path.join(directory, "masks.png")):
        images.append(("Truth vs predicted removal masks", "masks.png"))
    for title, name in images:
        sections.append(f"<h2>{html.escape(title)}</h2>"
                        f"<img src='{name}' alt='{html.escape(title)}'>")
    with open(os.path.join(directory, "summary.json"), "w", encoding="utf-8") as f:
        json.dump({**summary, "decision": decision}, f, indent=2, default=str)
    return write_page(directory, f"{pipeline} evaluation", sections)


def write_page(directory: str, title: str, sections: list[str]) -> str:
    """``<directory>/index.html`` of the sections, in the reports' style; returns its path."""
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
            f"</title><style>{_STYLE}</style></head><body>{''.join(sections)}</body></html>")
    path = os.path.join(directory, "index.html")
    with open(path, "w", encoding="utf-8") as f:
        f.write(page)
    return path
