"""The radar QC report against reference algorithms: agreement rows -> tables -> index.html.

Rows come from ``pipelines.radar_reference`` (one per sweep x range band x pair, see
``transforms.radar.reference``); the tables sum hits, misses and false alarms over what they
group before taking ratios. The page is rendered with jinja2 (autoescaped) beside the figures
the job wrote, relative links only.
"""

import json
import os

import jinja2
import pyarrow as pa
import pyarrow.dataset as pads

from transforms.radar.reference import CONSENSUS, FUZZY, PAIRS, RHOHV, UNET, summed

AGREEMENT_SCHEMA = pa.schema([
    pa.field("volume_id", pa.string()),
    pa.field("radar", pa.string()),
    pa.field("source", pa.string()),
    pa.field("sweep_number", pa.int32()),
    pa.field("elevation", pa.float64()),
    pa.field("band", pa.string()),
    pa.field("detected", pa.string()),
    pa.field("reference", pa.string()),
    pa.field("pod", pa.float64()),
    pa.field("far", pa.float64()),
    pa.field("csi", pa.float64()),
    pa.field("hits", pa.int64()),
    pa.field("misses", pa.int64()),
    pa.field("false_alarms", pa.int64()),
    pa.field("gates", pa.int64()),
    pa.field("echo_gates", pa.int64()),
    pa.field("removed_share", pa.float64()),
    pa.field("weather_removed_share", pa.float64()),
    pa.field("figure", pa.string()),
    pa.field("model_name", pa.string()),
    pa.field("model_version", pa.string()),
    pa.field("run_id", pa.string()),
])
PAIR_LABELS = {(UNET, CONSENSUS): "UNet vs consensus", (UNET, FUZZY): "UNet vs wradlib fuzzy",
               (UNET, RHOHV): "UNet vs RHOHV rule", (FUZZY, RHOHV): "fuzzy vs RHOHV rule"}
TEMPLATES = os.path.join(os.path.dirname(__file__), "templates")


def read_agreement(base: str, run_id: str) -> list[dict]:
    """The agreement rows one run wrote."""
    if not os.path.isdir(base):
        return []
    table = pads.dataset(base, partitioning="hive").to_table(
        filter=pads.field("run_id") == run_id)
    return table.to_pylist()


def _group(rows, *fields) -> dict:
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault(tuple(row[f] for f in fields), []).append(row)
    return groups


def volume_table(rows: list[dict]) -> list[dict]:
    """Per volume and pair, over every dual-pol sweep and all ranges."""
    out = []
    for (volume, detected, reference), group in sorted(_group(
            [r for r in rows if r["band"] == "all"], "volume_id", "detected",
            "reference").items(), key=lambda kv: (kv[0][0], PAIRS.index(kv[0][1:]))):
        out.append({"volume_id": volume, "pair": PAIR_LABELS[(detected, reference)],
                    "sweeps": len(group), **summed(group)})
    return out


def band_table(rows: list[dict]) -> list[dict]:
    """Per volume and range band: the UNet against the consensus, and the references'
    agreement with each other."""
    out = []
    bands = [r for r in rows if r["band"] != "all"]
    order = {b: i for i, b in enumerate(dict.fromkeys(r["band"] for r in bands))}
    for (volume, band), group in sorted(_group(bands, "volume_id", "band").items(),
                                        key=lambda kv: (kv[0][0], order[kv[0][1]])):
        unet = summed([r for r in group if (r["detected"], r["reference"]) == (UNET, CONSENSUS)])
        refs = summed([r for r in group if (r["detected"], r["reference"]) == (FUZZY, RHOHV)])
        out.append({"volume_id": volume, "band": band, "unet": unet, "references": refs})
    return out


def sweep_table(rows: list[dict]) -> list[dict]:
    """Per volume and sweep (all ranges): the UNet against the consensus, and the references'
    agreement."""
    out = []
    everything = [r for r in rows if r["band"] == "all"]
    for (volume, sweep), group in sorted(_group(everything, "volume_id",
                                                "sweep_number").items()):
        pick = {(r["detected"], r["reference"]): r for r in group}
        out.append({"volume_id": volume, "sweep_number": sweep,
                    "elevation": group[0]["elevation"], "unet": pick[(UNET, CONSENSUS)],
                    "references": pick[(FUZZY, RHOHV)]})
    return out


def write_reference_report(rows: list[dict], folder: str, params, bands_km,
                           weak_label_volumes: list[str] = ()) -> str:
    """Render ``index.html`` into ``folder`` (where the figures are); returns its path.

    ``weak_label_volumes``: the volumes whose weak labels the model learnt from (its manifest),
    named so a reader knows which radars the figures are cross-radar for.
    """
    environment = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES),
                                     autoescape=True, undefined=jinja2.StrictUndefined)
    environment.filters["f3"] = lambda v: "–" if v is None else f"{v:.3f}"
    environment.filters["pct"] = lambda v: "–" if v is None else f"{v:.1%}"
    figures = sorted({(r["volume_id"], r["figure"]) for r in rows if r.get("figure")})
    first = rows[0] if rows else {}
    page = environment.get_template("radar_reference.html.j2").render(
        model=f"{first.get('model_name', '?')} {first.get('model_version', '?')}",
        run_id=first.get("run_id", "?"), params=params, bands=bands_km,
        volumes=volume_table(rows), band_rows=band_table(rows), sweeps=sweep_table(rows),
        figures=figures, weak_label_volumes=list(weak_label_volumes))
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "index.html")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(page)
    # What the evaluation report of the same model shows of this run (see its "reference" part).
    with open(os.path.join(folder, "summary.json"), "w", encoding="utf-8") as handle:
        json.dump({"kind": "reference_agreement", "model": first.get("model_name"),
                   "model_version": first.get("model_version"), "run_id": first.get("run_id"),
                   "volumes": volume_table(rows)}, handle, indent=2, default=str)
    return path
