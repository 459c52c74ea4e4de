"""Leave one radar out: how the radar QC UNet does on a radar it has never seen.

Weak labels (``transforms.radar.weak_labels``: where wradlib's fuzzy classification and the
RHOHV rule agree) come from every dual-pol sweep of the given volumes. For each radar, a model
is trained on the synthetic windows plus windows of every *other* radar's sweeps, then scored on
that radar's volumes against the references (``transforms.radar.reference``): CSI, POD, FAR and
the Heidke skill score against the consensus, the share of the consensus weather it removes (the
safety figure), agreement with the fuzzy reference alone (the consensus on agreed gates *is* the
RHOHV rule, so this is the guard against a model that copies the rule), per range band, and the
share of echo where the UNet's call differs from both references (``uncertain``). Each fold's
synthetic hold-out skill comes from its manifest.

It is an experiment, not a test: one run trains one model per radar (minutes each). Every run
writes ``<output>/<recipe>-seed<seed>/result.json`` (everything) and ``table.md`` (the tables
the docs quote), and the models into a registry of its own beside them.

Usage::

    beamline radar leave-one-out --output out/loro --recipe network \\
        --train_windows 400 --weak_windows 800 --epochs 6
"""

import argparse
import dataclasses
import datetime
import json
import logging
import os
import shlex
import statistics
import sys
import time

import numpy as np

from models.exit_codes import run_command
from transforms.radar import reference
from transforms.radar.reading import volume_paths, volume_source
from transforms.radar.weak_labels import LabelledSweep, load_sweeps, weak_windows

LOGGER = logging.getLogger(__name__)
DEFAULT_DATA = os.path.join("..", "shared", "data", "radar")


@dataclasses.dataclass(frozen=True)
class Recipe:
    """What one leave-one-radar-out run trains with (the same for every fold)."""

    name: str
    train_windows: int          # synthetic windows
    weak_windows: int           # windows cut from the other radars' sweeps
    epochs: int
    seed: int = 42
    weak_weather_weight: float = 1.0
    balance_radars: bool = False    # each radar equally likely per window, not each sweep
    domain_randomise: bool = False
    # Also scored with the weather-safety rule (min DBZH, min RHOHV), the same models.
    weather_safety: tuple[float, float] | None = None


def score_sweeps(probabilities, sweeps: list[LabelledSweep], bands_km,
                 safety: tuple[float, float] | None = None) -> list[dict]:
    """Agreement rows (``reference.agreement_rows``) of the UNet's classes on each sweep,
    each row also carrying the sweep's ``uncertain`` gates (the UNet against both references);
    with ``safety`` (min DBZH, min RHOHV) the classes after the weather-safety rule
    (``vocabulary.protect_weather``)."""
    from models.radar_qc.handler import classify_sweeps
    from models.radar_qc.vocabulary import protect_weather, removed

    rows = []
    for sweep in sweeps:
        echo = ~np.isnan(sweep.data[..., 0])
        classes = classify_sweeps(probabilities, sweep.data[None])[0]
        if safety is not None:
            classes = protect_weather(classes, sweep.data, *safety)
        unet = removed(classes) & echo
        masks = {reference.UNET: unet, **sweep.masks}
        identity = {"volume_id": sweep.volume_id, "radar": sweep.radar,
                    "sweep_number": sweep.sweep_number, "elevation": sweep.elevation}
        uncertain = reference.uncertain_gates(unet, sweep.masks, echo)
        rows += reference.agreement_rows(identity, masks, echo, sweep.range_km, bands_km,
                                         {"uncertain": uncertain})
    return rows


def radar_summary(rows: list[dict]) -> dict:
    """One radar's figures over all its sweeps: the UNet against the consensus (all ranges and
    per band), against the fuzzy reference alone and the RHOHV rule, the references' own
    agreement, and the uncertain share of its echo (whole radar and worst volume)."""
    def pick(detected, ref, band="all"):
        return reference.summed([r for r in rows if r["detected"] == detected
                                 and r["reference"] == ref and r["band"] == band])

    consensus = [r for r in rows if r["reference"] == reference.CONSENSUS]
    bands = list(dict.fromkeys(r["band"] for r in rows if r["band"] != "all"))
    per_volume = {}
    for r in consensus:
        if r["band"] == "all":
            gates = per_volume.setdefault(r["volume_id"], [0, 0])
            gates[0] += r["uncertain_gates"]
            gates[1] += r["echo_gates"]
    all_rows = [r for r in consensus if r["band"] == "all"]
    echo = sum(r["echo_gates"] for r in all_rows)
    return {
        "volumes": sorted(per_volume),
        "sweeps": len(all_rows),
        "consensus": pick(reference.UNET, reference.CONSENSUS),
        "bands": {b: pick(reference.UNET, reference.CONSENSUS, b) for b in bands},
        "fuzzy": pick(reference.UNET, reference.FUZZY),
        "rhohv": pick(reference.UNET, reference.RHOHV),
        "references": pick(reference.FUZZY, reference.RHOHV),
        "uncertain_share": sum(r["uncertain_gates"] for r in all_rows) / echo if echo else None,
        "uncertain_share_by_volume": {v: u / e if e else None
                                      for v, (u, e) in sorted(per_volume.items())},
    }


def spread(summaries: dict, path: tuple, worst=min) -> dict:
    """Median and worst over radars of one figure (``path`` into a radar's summary)."""
    values = []
    for summary in summaries.values():
        value = summary
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        if value is not None:
            values.append(value)
    return {"median": statistics.median(values) if values else None,
            "worst": worst(values) if values else None}


def train_fold(held_out: str, sweeps: list[LabelledSweep], recipe: Recipe, registry: str,
               command: str):
    """Train on the synthetic windows plus the other radars' weak windows; (ref, seconds)."""
    from models.radar_qc.train import TRAIN_WINDOW, train

    others = [s for s in sweeps if s.radar != held_out]
    data, labels = weak_windows([(s.data, s.labels) for s in others], recipe.weak_windows,
                                *TRAIN_WINDOW, seed=recipe.seed + 17,
                                groups=[s.radar for s in others] if recipe.balance_radars
                                else None)
    weak = {"data": data, "labels": labels,
            "volume_ids": sorted({s.volume_id for s in others})}
    started = time.monotonic()
    ref = train(registry, recipe.seed, recipe.train_windows, 48, recipe.epochs, command=command,
                weak=weak, weak_weather_weight=recipe.weak_weather_weight,
                randomise=recipe.domain_randomise)
    return ref, time.monotonic() - started


def run_folds(sweeps: list[LabelledSweep], recipe: Recipe, folder: str, bands_km,
              command: str, radars=None) -> dict:
    """Every fold of the recipe; the result written as ``result.json`` as each fold ends."""
    import keras

    import models.radar_qc.model  # noqa: F401 - registers the preprocessing layer
    from models.radar_qc.handler import keras_probabilities

    radars = radars or sorted({s.radar for s in sweeps})
    result = {"recipe": dataclasses.asdict(recipe), "command": command,
              "started_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
              "cpus": len(os.sched_getaffinity(0)), "bands_km": list(bands_km),
              "volumes": sorted({(s.radar, s.volume_id) for s in sweeps}), "folds": {}}
    for radar in radars:
        held = [s for s in sweeps if s.radar == radar]
        ref, seconds = train_fold(radar, sweeps, recipe, os.path.join(folder, "registry"),
                                  command)
        model = keras.models.load_model(ref.path, compile=False)
        rows = score_sweeps(keras_probabilities(model), held, bands_km)
        holdout = ref.manifest["holdout_metrics"]
        result["folds"][radar] = {
            "model": f"{ref.name} {ref.version}", "train_seconds": round(seconds, 1),
            "trained_on": ref.manifest["weak_label_volumes"],
            "synthetic_holdout_csi": holdout["unet"]["csi"],
            "synthetic_holdout_rhohv_rule_csi": holdout.get("rhohv_rule", {}).get("csi"),
            **radar_summary(rows)}
        if recipe.weather_safety is not None:
            safe = score_sweeps(keras_probabilities(model), held, bands_km,
                                recipe.weather_safety)
            result["folds"][radar]["with_weather_safety"] = {
                "synthetic_holdout_csi": synthetic_holdout_csi(model, recipe),
                "seconds_per_sweep_added": rule_seconds(held, recipe.weather_safety),
                **radar_summary(safe)}
        fold = result["folds"][radar]
        print(f"  {radar}: CSI {_f(fold['consensus']['csi'])}, HSS "
              f"{_f(fold['consensus']['hss'])}, weather removed "
              f"{_f(fold['consensus']['weather_removed_share'], '.1%')}, fuzzy-alone CSI "
              f"{_f(fold['fuzzy']['csi'])}; trained in {seconds / 60:.1f} min", flush=True)
        if "with_weather_safety" in fold:
            safe = fold["with_weather_safety"]
            print(f"  {radar} with the weather-safety rule: CSI {_f(safe['consensus']['csi'])}, "
                  f"weather removed {_f(safe['consensus']['weather_removed_share'], '.1%')}, "
                  f"synthetic hold-out CSI {_f(safe['synthetic_holdout_csi'], '.3f')}",
                  flush=True)
        _write(folder, result)
    summaries = result["folds"]
    result["summary"] = {
        "csi": spread(summaries, ("consensus", "csi")),
        "hss": spread(summaries, ("consensus", "hss")),
        "weather_removed_share": spread(summaries, ("consensus", "weather_removed_share"), max),
        "fuzzy_csi": spread(summaries, ("fuzzy", "csi")),
        "synthetic_holdout_csi": spread(summaries, ("synthetic_holdout_csi",)),
        "uncertain_share": spread(summaries, ("uncertain_share",), max),
        "train_minutes_total": round(sum(f["train_seconds"] for f in summaries.values()) / 60,
                                     1),
    }
    _write(folder, result)
    return result


def rule_seconds(sweeps: list[LabelledSweep], rule: tuple[float, float]) -> float:
    """What the weather-safety rule adds to QC, per sweep (the rule alone: the classes exist
    already when it runs)."""
    from models.radar_qc.vocabulary import CLUTTER, protect_weather

    started = time.perf_counter()
    for sweep in sweeps:
        protect_weather(np.full(sweep.data.shape[:-1], CLUTTER, np.uint8), sweep.data, *rule)
    return round((time.perf_counter() - started) / max(len(sweeps), 1), 4)


def synthetic_holdout_csi(model, recipe: Recipe) -> float:
    """The fold's synthetic hold-out (the training's own: same windows, same seed) scored
    with the weather-safety rule: its CSI of the removed class."""
    from models.radar_qc.model import predict_classes
    from models.radar_qc.synthetic import synthetic_set
    from models.radar_qc.train import HOLDOUT_WINDOW, non_meteorological, skill
    from models.radar_qc.vocabulary import CHANNELS, protect_weather

    data, labels = synthetic_set(recipe.seed + 1_000_003, 48, *HOLDOUT_WINDOW,
                                 channels=CHANNELS)
    classes = protect_weather(predict_classes(model, data), data, *recipe.weather_safety)
    return skill(labels, non_meteorological(classes))["csi"]


def _f(value, form=".2f") -> str:
    return "-" if value is None else format(value, form)


def markdown(result: dict) -> str:
    """The run's tables as the docs quote them."""
    recipe = result["recipe"]
    folds = result["folds"]
    bands = list(next(iter(folds.values()))["bands"]) if folds else []
    lines = [f"Recipe `{recipe['name']}` (seed {recipe['seed']}): {recipe['train_windows']} "
             f"synthetic + {recipe['weak_windows']} weak-label windows, {recipe['epochs']} "
             f"epochs, weak weather weight {recipe['weak_weather_weight']:g}, "
             f"{'radar-balanced' if recipe['balance_radars'] else 'sweep-uniform'} windows"
             f"{', domain-randomised' if recipe['domain_randomise'] else ''}; "
             f"{result['cpus']} cores, {result['started_at']}.", "",
             "| held-out radar | volumes | sweeps | POD | FAR | CSI | HSS | weather removed "
             "| UNet vs fuzzy CSI | UNet vs RHOHV CSI | fuzzy vs RHOHV CSI | uncertain "
             "| synthetic hold-out CSI | training |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
             "| ---: | ---: |"]
    for radar, fold in folds.items():
        c = fold["consensus"]
        lines.append(
            f"| {radar} | {len(fold['volumes'])} | {fold['sweeps']} | {_f(c['pod'])} | "
            f"{_f(c['far'])} | **{_f(c['csi'])}** | {_f(c['hss'])} | "
            f"**{_f(c['weather_removed_share'], '.1%')}** | {_f(fold['fuzzy']['csi'])} | "
            f"{_f(fold['rhohv']['csi'])} | {_f(fold['references']['csi'])} | "
            f"{_f(fold['uncertain_share'], '.1%')} | {_f(fold['synthetic_holdout_csi'], '.3f')}"
            f" | {fold['train_seconds'] / 60:.1f} min |")
    s = result.get("summary")
    if s:
        lines.append(
            f"| **median / worst** | | | | | {_f(s['csi']['median'])} / {_f(s['csi']['worst'])}"
            f" | {_f(s['hss']['median'])} / {_f(s['hss']['worst'])} | "
            f"{_f(s['weather_removed_share']['median'], '.1%')} / "
            f"{_f(s['weather_removed_share']['worst'], '.1%')} | "
            f"{_f(s['fuzzy_csi']['median'])} / {_f(s['fuzzy_csi']['worst'])} | | | "
            f"{_f(s['uncertain_share']['median'], '.1%')} / "
            f"{_f(s['uncertain_share']['worst'], '.1%')} | "
            f"{_f(s['synthetic_holdout_csi']['median'], '.3f')} / "
            f"{_f(s['synthetic_holdout_csi']['worst'], '.3f')} | "
            f"{s['train_minutes_total']} min in all |")
    lines += ["", "Per range band, CSI (weather removed):", "",
              "| held-out radar | " + " | ".join(bands) + " |",
              "| --- |" + " ---: |" * len(bands)]
    for radar, fold in folds.items():
        cells = [f"{_f(fold['bands'][b]['csi'])} "
                 f"({_f(fold['bands'][b]['weather_removed_share'], '.1%')})" for b in bands]
        lines.append(f"| {radar} | " + " | ".join(cells) + " |")
    if any("with_weather_safety" in fold for fold in folds.values()):
        dbzh, rhohv = recipe["weather_safety"]
        lines += ["", f"The same models with the weather-safety rule (a removed gate of DBZH >= "
                      f"{dbzh:g} dBZ and RHOHV >= {rhohv:g} is kept as weather):", "",
                  "| held-out radar | CSI | HSS | weather removed | UNet vs fuzzy CSI | "
                  "synthetic hold-out CSI | added per sweep |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for radar, fold in folds.items():
            safe = fold.get("with_weather_safety")
            if not safe:
                continue
            c, before = safe["consensus"], fold["consensus"]
            lines.append(
                f"| {radar} | {_f(c['csi'])} ({_f(before['csi'])}) | {_f(c['hss'])} "
                f"({_f(before['hss'])}) | {_f(c['weather_removed_share'], '.1%')} "
                f"({_f(before['weather_removed_share'], '.1%')}) | {_f(safe['fuzzy']['csi'])} "
                f"({_f(fold['fuzzy']['csi'])}) | {_f(safe['synthetic_holdout_csi'], '.3f')} "
                f"({_f(fold['synthetic_holdout_csi'], '.3f')}) | "
                f"{safe['seconds_per_sweep_added'] * 1000:.0f} ms |")
        lines.append("(without the rule in brackets)")
    return "\n".join(lines) + "\n"


def _write(folder: str, result: dict) -> None:
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "result.json"), "w") as f:
        json.dump(result, f, indent=1, default=str)
    with open(os.path.join(folder, "table.md"), "w") as f:
        f.write(markdown(result))


def parse_arguments(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="beamline radar leave-one-out",
        description="For each radar, train the dual-pol UNet without that radar's volumes "
                    "and score it on them against the reference algorithms")
    parser.add_argument("--data", default=DEFAULT_DATA,
                        help="folder of real volumes, searched with its subfolders (archive "
                             "files and chunk folders; default ../shared/data/radar)")
    parser.add_argument("--output", default=os.path.join("out", "leave_one_radar_out"),
                        help="where each run's folder is written")
    parser.add_argument("--recipe", default="custom", help="the run's name in the tables")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--train_windows", type=int, default=400, help="synthetic windows")
    parser.add_argument("--weak_windows", type=int, default=800,
                        help="windows of the other radars' sweeps (the same in every fold)")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--weak_weather_weight", type=float, default=1.0)
    parser.add_argument("--balance_radars", action="store_true",
                        help="each window from a radar drawn with equal chance (default: each "
                             "sweep equally likely, so radars with many sweeps weigh more)")
    parser.add_argument("--domain_randomise", action="store_true")
    parser.add_argument("--radars", default="",
                        help="comma-separated radars to hold out (default: every radar found)")
    parser.add_argument("--weather_safety", default=None, metavar="MIN_DBZH,MIN_RHOHV",
                        help="also score every fold's model with the weather-safety rule: a "
                             "removed gate at least this strong and coherent is kept as "
                             "weather (e.g. 20,0.95)")
    parser.add_argument("--reference_config", default=None,
                        help="the references' settings (default "
                             "<config>/evaluation/radar_reference.json)")
    args = parser.parse_args(argv)
    for name in ("train_windows", "weak_windows", "epochs"):
        if getattr(args, name) < 1:
            parser.error(f"--{name}: a count, 1 or more")
    if not os.path.isdir(args.data):
        parser.error(f"--data: {args.data} is not a folder")
    if args.weather_safety is not None:
        try:
            dbzh, rhohv = (float(v) for v in args.weather_safety.split(","))
        except ValueError:
            parser.error(f"--weather_safety: two numbers MIN_DBZH,MIN_RHOHV (e.g. 20,0.95), "
                         f"got {args.weather_safety!r}")
        if not 0.0 < rhohv <= 1.0:
            parser.error(f"--weather_safety: RHOHV {rhohv:g} is not in (0, 1]")
        args.weather_safety = (dbzh, rhohv)
    return args


def main(argv=None) -> None:
    args = parse_arguments(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    recipe = Recipe(args.recipe, args.train_windows, args.weak_windows, args.epochs, args.seed,
                    args.weak_weather_weight, args.balance_radars, args.domain_randomise,
                    args.weather_safety)
    params, bands = reference.load_parameters(args.reference_config)
    paths = volume_paths(args.data)
    sweeps, skipped = load_sweeps([volume_source(p) for p in paths], params)
    for line in skipped:
        print(f"  left out: {line}")
    found = sorted({s.radar for s in sweeps})
    wanted = [r.strip() for r in args.radars.split(",") if r.strip()] or found
    unknown = sorted(set(wanted) - set(found))
    if unknown:
        raise ValueError(f"--radars: {', '.join(unknown)} not among the radars found "
                         f"({', '.join(found)})")
    if len(found) < 2:
        raise ValueError(f"--data: {args.data} holds dual-pol volumes of {len(found)} radar(s); "
                         "leaving one out needs two or more")
    folder = os.path.join(args.output, f"{recipe.name}-seed{recipe.seed}")
    command = shlex.join(["beamline", "radar", "leave-one-out", *(argv or sys.argv[1:])])
    print(f"leave one radar out, recipe {recipe.name}: {len(sweeps)} dual-pol sweeps of "
          f"{len(paths) - len(skipped)} volumes, radars {', '.join(found)}; -> {folder}",
          flush=True)
    result = run_folds(sweeps, recipe, folder, bands, command, wanted)
    print(markdown(result))
    print(f"written: {folder}/result.json, {folder}/table.md")


if __name__ == "__main__":
    sys.exit(run_command(main))
