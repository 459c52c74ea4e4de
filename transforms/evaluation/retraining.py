"""Rule-based retraining decisions from an evaluation's metric rows. Pure functions.

A rules file (see ``transforms/rules/retraining_*.json``) lists rules; each is checked and
reported with its evidence, any that fires asks for retraining, and ``min_new_labels`` gates
the answer (a model cannot be retrained without new labels to learn from). Rule types:

- ``metric_drop`` / ``metric_rise``: the evaluated window's metric against the hold-out
  metric in the model's manifest (``holdout`` names it when it differs, dotted for nesting);
- ``drift``: at least ``min_features`` inputs (or the score) over their drift limits;
- ``slice_gap``: a slice group, not flagged small, with a gap ``below`` or ``abs_above`` a limit,
  or (``"compare": "holdout"``) a gap that moved more than ``max_change`` from the same group's
  gap on the hold-out set (recorded in the manifest at training);
- ``schedule``: a weekday and time (UTC) with a tolerance, e.g. Sundays 02:00 within 60 min;
- ``event``: ``rules_version_changed``, the offer rules version differs from the one the
  previous decision saw; ``code_release_changed``, the code release (the package version, not
  the commit) differs;
- ``estimated_drop`` / ``estimated_rise``: as ``metric_drop`` / ``metric_rise``, on the figure
  estimated from the scores before labels (role ``estimated``, ``models.estimation``); always
  ``"action": "alert"`` (no labels to retrain on yet). A change of the outcomes themselves for
  unchanged inputs is invisible to it;
- ``monitoring``: a figure watched without truth (radar: ``removed_share_change``,
  ``mean_*_shift``; ``metrics`` takes shell-style patterns) flagged ``shifted`` or ``drifted``
  for some radar and tilt in the window.
A rule with ``"enabled": false`` is listed but never fires. A rule with ``"action": "alert"``
is reported (for a person to read) but does not ask for retraining: fairness gaps that the data
itself carries are not fixed by retraining on more of the same data.
"""

import datetime
import fnmatch
import math

from transforms.evaluation.join import ALL, ESTIMATED, served_rows

# event -> (metric row counting what the window saw, key of the decision record keeping it)
EVENTS = {"rules_version_changed": ("rows_by_rules_version", "rules_versions"),
          "code_release_changed": ("rows_by_code_release", "code_releases")}
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


class RulesError(ValueError):
    """A retraining rules file that cannot be applied."""


def _holdout_value(holdout: dict, path: str):
    value = holdout
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def current_model_version(rows: list[dict]) -> str:
    """The newest model version among the evaluated rows (the one in service)."""
    versions = sorted({r["model_version"] for r in rows if r["model_version"] != ALL})
    if not versions:
        raise RulesError("no evaluated model version in the metric rows")
    return versions[-1]


def window_rows(rows: list[dict], model_version: str, window: str) -> tuple[str, list[dict]]:
    """The metric rows of one model version in the window the rules judge.

    ``window`` "latest" is the newest day/week evaluated, "all" the whole period.
    """
    own = [r for r in rows if r["model_version"] == model_version]
    if window == "all":
        return ALL, [r for r in own if r["window"] == ALL]
    starts = sorted({r["window_start"] for r in own if r["window"] != ALL})
    if not starts:
        return ALL, [r for r in own if r["window"] == ALL]
    return starts[-1], [r for r in own if r["window"] != ALL and r["window_start"] == starts[-1]]


def _overall(rows: list[dict], name: str, detail: str | None = None):
    for r in rows:
        if r["slice"] == ALL and r["metric"] == name and r.get("detail") == detail:
            return r["value"]
    return None


def slice_gap_evidence(rule: dict, rows: list[dict], holdout_slices: dict) -> dict:
    """The slice groups (not flagged small) whose gap breaks the rule.

    With ``"compare": "holdout"`` the rule judges how far a gap moved from the same group's
    gap on the hold-out set (``max_change``); groups small on either side are skipped. Else it
    judges the gap itself (``below`` / ``abs_above``).
    """
    gap, against_holdout = rule["gap"], rule.get("compare") == "holdout"
    breaches = []
    for r in rows:
        if r["metric"] != gap or r["slice"] in (ALL, "drift") or r["flag"] == "small":
            continue
        value = r["value"]
        if value is None or math.isnan(value):
            continue
        breach = {"slice": r["slice"], "group": r["slice_value"], "value": value,
                  "size": r["count"], "flag": r["flag"]}
        if against_holdout:
            baseline = holdout_slices.get(r["slice"], {}).get(r["slice_value"])
            if not baseline or baseline.get("small") or baseline.get(gap) is None:
                continue
            change = value - baseline[gap]
            if math.isnan(change) or abs(change) <= rule["max_change"]:
                continue
            breaches.append({**breach, "holdout": baseline[gap], "change": change})
        elif ("below" in rule and value < rule["below"]) or (
                "abs_above" in rule and abs(value) > rule["abs_above"]):
            breaches.append(breach)
    limits = {k: rule[k] for k in ("below", "abs_above", "max_change") if k in rule}
    evidence = {"gap": gap, "limit": limits, "breaches": breaches}
    if against_holdout:
        evidence["compared_with"] = "hold-out gaps in the model manifest"
        if not holdout_slices:
            evidence["note"] = "the manifest has no hold-out slice gaps (older model)"
    return evidence


def check_rule(rule: dict, rows: list[dict], holdout: dict, now: datetime.datetime,
               previous: dict | None, holdout_slices: dict | None = None) -> dict:
    """One rule against the window's metric rows: {name, type, action, fired, evidence}."""
    kind = rule.get("type")
    result = {"name": rule.get("name", kind), "type": kind,
              "action": rule.get("action", "retrain"), "fired": False, "evidence": {}}
    if not rule.get("enabled", True):
        result["evidence"] = {"disabled": True}
        return result
    if kind in ("metric_drop", "metric_rise", "estimated_drop", "estimated_rise"):
        estimated = kind.startswith("estimated")
        judged = [r for r in rows if (r.get("role") == ESTIMATED) == estimated]
        current = _overall(judged, rule["metric"])
        reference = _holdout_value(holdout, rule.get("holdout", rule["metric"]))
        evidence = {"metric": rule["metric"], "current": current, "holdout": reference}
        if estimated:
            evidence.update(estimated=True, interval=[
                _overall(judged, rule["metric"], "interval_low"),
                _overall(judged, rule["metric"], "interval_high")])
        if current is not None and reference is not None and not math.isnan(current):
            dropping = kind.endswith("_drop")
            change = (reference - current) if dropping else (current - reference)
            limit = rule["max_drop"] if dropping else rule["max_rise"]
            evidence.update(change=change, limit=limit)
            result["fired"] = change > limit
        else:
            evidence["note"] = "metric not available in this window"
        result["evidence"] = evidence
    elif kind == "drift":
        drifted = sorted({(r["detail"], r["metric"], r["value"]) for r in rows
                          if r["slice"] == "drift" and r["flag"] == "drifted"})
        limits = {(r["detail"], r["metric"][:-len("_limit")]): r["value"] for r in rows
                  if r["slice"] == "drift" and r["metric"].endswith("_limit")}
        features = sorted({d[0] for d in drifted})
        result["evidence"] = {
            "drifted_features": features,
            "figures": [{"feature": f, "figure": m, "value": v, "limit": limits.get((f, m))}
                        for f, m, v in drifted],
            "min_features": rule.get("min_features", 1)}
        result["fired"] = len(features) >= rule.get("min_features", 1)
    elif kind == "monitoring":
        patterns = rule.get("metrics") or []
        flagged = [{"radar": r["slice_value"], "tilt": r["detail"], "metric": r["metric"],
                    "value": r["value"], "flag": r["flag"]} for r in rows
                   if r["flag"] in ("shifted", "drifted") and r["slice"] != ALL
                   and any(fnmatch.fnmatch(r["metric"], p) for p in patterns)]
        result["evidence"] = {"metrics": patterns, "flagged": sorted(
            flagged, key=lambda f: (-abs(f["value"] or 0), f["radar"], str(f["tilt"])))}
        result["fired"] = bool(flagged)
    elif kind == "slice_gap":
        result["evidence"] = slice_gap_evidence(rule, rows, holdout_slices or {})
        result["fired"] = bool(result["evidence"]["breaches"])
    elif kind == "schedule":
        weekday = rule["weekday"].lower()
        if weekday not in WEEKDAYS:
            raise RulesError(f"rule {result['name']}: weekday {rule['weekday']!r} unknown")
        hour, minute = (int(x) for x in rule["at"].split(":"))
        scheduled = now.replace(hour=hour, minute=minute, second=0, microsecond=0)
        minutes_after = (now - scheduled).total_seconds() / 60.0
        result["fired"] = (WEEKDAYS[now.weekday()] == weekday
                           and 0 <= minutes_after < rule.get("within_minutes", 60))
        result["evidence"] = {"now": now.isoformat(), "schedule": f"{weekday} {rule['at']} UTC"}
    elif kind == "event":
        if rule.get("event") not in EVENTS:
            raise RulesError(f"rule {result['name']}: unknown event {rule.get('event')!r}")
        metric_name, record_key = EVENTS[rule["event"]]
        seen = sorted({r["detail"] for r in rows if r["metric"] == metric_name})
        before = sorted(previous.get(record_key, [])) if previous else None
        result["evidence"] = {record_key: seen, "previous_decision": before}
        result["fired"] = before is not None and bool(seen) and seen != before
    else:
        raise RulesError(f"rule {result['name']}: unknown type {kind!r}")
    return result


def _num(value) -> str:
    """A figure as a person reads it: 3 significant decimals, no float noise."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1 else f"{value:,.3f}".rstrip("0").rstrip(".")
    return str(value)


def _limit_words(limits: dict) -> str:
    words = {"below": "below", "abs_above": "beyond ±", "max_change": "moved more than"}
    return ", ".join(f"{words[k]}{'' if k == 'abs_above' else ' '}{_num(v)}"
                     for k, v in limits.items())


def evidence_sentence(check: dict, most: int = 3) -> str:
    """One rule's evidence (``check_rule``'s result) in words, figures rounded; the JSON stays
    in the decision record."""
    e, kind = check["evidence"], check["type"]
    if e.get("disabled"):
        return "Disabled in the rules file."
    if kind in ("metric_drop", "metric_rise", "estimated_drop", "estimated_rise"):
        if "change" not in e:
            return f"{e['metric']} is not available in this window."
        direction = "drop" if kind.endswith("_drop") else "rise"
        verdict = "more than" if check["fired"] else "within"
        now = (f"estimated at {_num(e['current'])} (95 % interval {_num(e['interval'][0])} to "
               f"{_num(e['interval'][1])}) before labels" if e.get("estimated")
               else f"{_num(e['current'])} now")
        return (f"{e['metric']} {now} against {_num(e['holdout'])} on the "
                f"hold-out: a {direction} of {_num(e['change'])}, {verdict} the "
                f"{_num(e['limit'])} allowed.")
    if kind == "drift":
        figures = e["figures"]
        if not figures:
            return f"No input drifted (the rule needs {e['min_features']})."
        shown = "; ".join(f"{f['feature']} {f['figure']} {_num(f['value'])}"
                          + (f" (limit {_num(f['limit'])})" if f.get("limit") is not None
                             else "") for f in figures[:most])
        more = f"; and {len(figures) - most} more" if len(figures) > most else ""
        return (f"{len(e['drifted_features'])} input(s) drifted, the rule needs "
                f"{e['min_features']}: {shown}{more}.")
    if kind == "slice_gap":
        limits = _limit_words(e["limit"])
        if not e["breaches"]:
            note = f" ({e['note']})" if e.get("note") else ""
            return f"No {e['gap']} of any group {limits}{note}."
        parts = []
        for b in e["breaches"][:most]:
            text = f"{b['slice']}={b['group']} {_num(b['value'])}"
            if "holdout" in b:
                text += f" (hold-out {_num(b['holdout'])}, moved {_num(b['change'])})"
            parts.append(text + f", {b['size']} rows")
        more = (f"; and {len(e['breaches']) - most} more group(s)"
                if len(e["breaches"]) > most else "")
        return f"{e['gap']} {limits} in {'; '.join(parts)}{more}."
    if kind == "monitoring":
        if not e["flagged"]:
            return f"No {', '.join(e['metrics'])} flagged for any radar and tilt."
        shown = "; ".join(f"{f['radar']} {f['tilt']} {f['metric']} {_num(f['value'])}"
                          for f in e["flagged"][:most])
        more = f"; and {len(e['flagged']) - most} more" if len(e["flagged"]) > most else ""
        return f"{len(e['flagged'])} flagged against their radar's reference: {shown}{more}."
    if kind == "schedule":
        return f"Scheduled {e['schedule']}; evaluated at {e['now'][:16].replace('T', ' ')} UTC."
    if kind == "event":
        (key, seen), (_, before) = list(e.items())
        if before is None:
            return f"{key.replace('_', ' ')}: {', '.join(seen) or 'none'}; no previous decision."
        return (f"{key.replace('_', ' ')}: {', '.join(seen) or 'none'} now, "
                f"{', '.join(before) or 'none'} at the previous decision.")
    return str(e)


def decide(rows: list[dict], rules: dict, holdout: dict, now: datetime.datetime,
           previous: dict | None = None, registry: str = "registry",
           holdout_slices: dict | None = None, training_command: str | None = None) -> dict:
    """The retraining decision record for one evaluation run.

    Args:
        rows: the run's metric rows (``METRIC_SCHEMA`` dicts).
        rules: the parsed rules file.
        holdout: the hold-out metrics of the evaluated model version (its manifest).
        holdout_slices: the manifest's hold-out slice gaps (baseline of "compare": "holdout").
        now: the decision time (schedules are judged on it).
        previous: the previous decision record of this pipeline, if any.
        registry: substituted into the retrain command (``{registry}``).
        training_command: the command that trained the evaluated version (its manifest),
            substituted for ``{training_command}``: "retrain as the version in service was".
    """
    # A shadow's figures are evidence for a person, not a trigger; the served version's
    # estimates are judged by the estimated_* rules only.
    estimates = [r for r in rows if r.get("role") == ESTIMATED]
    rows = served_rows(rows)
    version = current_model_version(rows)
    start, judged = window_rows(rows, version, rules.get("window", "latest"))
    judged = judged + [r for r in estimates if r["model_version"] == version
                       and r["window_start"] == start]
    labels = _overall(judged, "labelled") or 0
    checks = [check_rule(rule, judged, holdout, now, previous, holdout_slices)
              for rule in rules["rules"]]
    fired = [c for c in checks if c["fired"] and c["action"] == "retrain"]
    alerts = [c["name"] for c in checks if c["fired"] and c["action"] == "alert"]
    enough = labels >= rules.get("min_new_labels", 0)
    model_name = next((r["model_name"] for r in rows if r["model_version"] == version), None)
    return {
        "decided_at": now.isoformat(),
        "pipeline": next((r["pipeline"] for r in rows), None),
        "evaluation_run_id": next((r["evaluation_run_id"] for r in rows), None),
        "model_name": model_name,
        "model_version": version,
        "window_start": start,
        "rules_file_version": rules.get("version"),
        "retrain": bool(fired) and enough,
        "fired": [c["name"] for c in fired],
        "alerts": alerts,
        "labels_in_window": int(labels),
        "min_new_labels": rules.get("min_new_labels", 0),
        "reason": (("rules fired: " + ", ".join(c["name"] for c in fired)) if fired and enough
                   else (f"rules fired but only {int(labels)} new labels "
                         f"(< {rules.get('min_new_labels')})") if fired
                   else "no rule fired"),
        "checks": checks,
        "rules_versions": sorted({r["detail"] for r in judged
                                  if r["metric"] == "rows_by_rules_version"}),
        "code_releases": sorted({r["detail"] for r in judged
                                 if r["metric"] == "rows_by_code_release"}),
        "command": rules.get("retrain_command", "").format(
            registry=registry,
            training_command=training_command or "(the manifest records no training command)"),
    }
