"""Reference QC algorithms nobody here wrote, run on real sweeps, and the UNet's agreement with
them: what real-data skill can be measured without per-gate truth.

References (on the model grid, the sweep's gates as the UNet saw them):

- ``fuzzy``: wradlib's fuzzy-logic echo classification (``classify_echo_fuzzy``, Vulpiani et
  al. 2012) with its default weights and membership functions: textures of ZDR, RHOHV and
  PHIDP, RHOHV itself, Doppler velocity (from the sweep, else from the Doppler pass at the same
  angle; left out where there is none), and as static-clutter input wradlib's Gabella filter
  on reflectivity (``filter_gabella``; one volume per radar is not enough for a clutter map).
  A gate is not weather where the membership in the meteorological class is below
  ``fuzzy_threshold``.
- ``rhohv``: the polarimetric rule, RHOHV below ``rhohv_threshold``.
- ``consensus``: the gates where both agree; scored there only (``removed`` where both remove,
  ``weather`` where both keep).

Agreement is POD / FAR / CSI of one mask's removed class against another's, over echo gates,
per sweep and per range band, with the share of echo each removes and the share of the
consensus's weather gates the UNet removes (what QC must not do).
"""

import dataclasses

import numpy as np

from models.metrics import detection_scores, heidke_skill_score

UNET, FUZZY, RHOHV, CONSENSUS = "unet", "fuzzy", "rhohv", "consensus"
# (detected, reference) pairs reported, each of every sweep and range band.
PAIRS = ((UNET, CONSENSUS), (UNET, FUZZY), (UNET, RHOHV), (FUZZY, RHOHV))
_DBZH, _ZDR, _RHOHV, _PHIDP = range(4)


@dataclasses.dataclass(frozen=True)
class ReferenceParameters:
    """The references' settings (``<config>/evaluation/radar_reference.json``).

    Attributes:
        fuzzy_threshold: membership in the meteorological class below which a gate is not
            weather (wradlib's documentation suggests 0.5).
        rhohv_threshold: the RHOHV rule's threshold.
        gabella: keyword arguments of ``wradlib.classify.filter_gabella``.
        uncertain_share: share of a volume's echo above which its QC is "uncertain": where
            the UNet's call differs from both references' (``uncertain_gates``).
    """

    fuzzy_threshold: float = 0.5
    rhohv_threshold: float = 0.8
    gabella: dict = dataclasses.field(default_factory=lambda: {
        "wsize": 5, "thrsnorain": 0.0, "tr1": 6.0, "n_p": 6, "tr2": 1.3})
    uncertain_share: float = 0.10


def load_parameters(path: str | None = None) -> tuple[ReferenceParameters, list[float]]:
    """The references' settings and range bands from the configuration file (default
    ``<config>/evaluation/radar_reference.json``)."""
    from models.config import default_path, read_config

    config = read_config("evaluation", path or default_path("evaluation", "radar_reference")
                         ).content
    return (ReferenceParameters(config["fuzzy_threshold"], config["rhohv_threshold"],
                                config["gabella"],
                                config.get("qc_uncertain_share",
                                           ReferenceParameters.uncertain_share)),
            config["range_bands_km"])


def static_clutter(dbzh: np.ndarray, params: ReferenceParameters) -> np.ndarray:
    """wradlib's Gabella filter on reflectivity (no echo as -32 dBZ): 1.0 where it finds
    clutter-like isolated, spiky echo, else 0.0."""
    from wradlib.classify import filter_gabella

    return filter_gabella(np.where(np.isnan(dbzh), -32.0, dbzh), **params.gabella).astype(float)


def fuzzy_weather_membership(data: np.ndarray, velocity: np.ndarray | None,
                             params: ReferenceParameters) -> np.ndarray:
    """wradlib's membership in the meteorological class per gate (NaN without echo).

    Args:
        data: one sweep ``(azimuth, range, 4)`` in the dual-pol channels' order.
        velocity: radial velocity on the same grid (NaN where unmeasured), or None.
    """
    import warnings

    from wradlib.classify import classify_echo_fuzzy

    with warnings.catch_warnings():  # "Missing decision variable: dop" where None is meant
        warnings.simplefilter("ignore")
        membership, _ = classify_echo_fuzzy({
            "zdr": data[..., _ZDR], "rho": data[..., _RHOHV], "phi": data[..., _PHIDP],
            "dop": velocity, "map": static_clutter(data[..., _DBZH], params)})
    membership = np.asarray(membership, dtype=float)
    membership[np.isnan(data[..., _DBZH])] = np.nan
    return membership


def reference_masks(data: np.ndarray, velocity: np.ndarray | None,
                    params: ReferenceParameters) -> dict[str, np.ndarray]:
    """The references' removal masks (True = not weather) over the sweep's echo gates."""
    echo = ~np.isnan(data[..., _DBZH])
    with np.errstate(invalid="ignore"):
        fuzzy = echo & (fuzzy_weather_membership(data, velocity, params)
                        < params.fuzzy_threshold)
        rhohv = echo & (data[..., _RHOHV] < params.rhohv_threshold)
    return {FUZZY: fuzzy, RHOHV: rhohv}


def uncertain_gates(unet: np.ndarray, masks: dict[str, np.ndarray],
                    echo: np.ndarray) -> np.ndarray:
    """Echo gates where the UNet's call (True = removed) differs from both references': they
    agree with each other there and the model says otherwise."""
    return echo & (unet != masks[FUZZY]) & (unet != masks[RHOHV])


def sweep_uncertainty(volume, params: ReferenceParameters) -> dict[int, tuple[int, int]]:
    """Per dual-pol sweep of a classified volume (``DecodedVolume``), by sweep number:
    (uncertain gates, echo gates); empty when it has none (the references need dual-pol
    moments)."""
    from models.radar_qc.vocabulary import removed
    from transforms.radar.reading import DUAL_POL

    keys = volume.role_keys(DUAL_POL)
    if not keys:
        return {}
    classes, _ = volume.classes[DUAL_POL]
    out = {}
    for i, key in enumerate(keys):
        data = volume.stacks[DUAL_POL][i]
        echo = ~np.isnan(data[..., _DBZH])
        masks = reference_masks(data, sweep_velocity(volume.tree, key.sweep_number,
                                                     key.elevation), params)
        out[key.sweep_number] = (int(uncertain_gates(removed(classes[i]) & echo, masks,
                                                     echo).sum()), int(echo.sum()))
    return out


def _scores(detected: np.ndarray, reference: np.ndarray, where: np.ndarray) -> dict:
    scores = detection_scores(reference[where], detected[where])
    scores["gates"] = int(where.sum())
    return scores


def agreement_rows(sweep: dict, masks: dict[str, np.ndarray], echo: np.ndarray,
                   range_km: np.ndarray, bands_km, counted: dict | None = None) -> list[dict]:
    """Agreement of each pair in ``PAIRS``, over all echo gates and per range band.

    Args:
        sweep: what identifies the sweep (volume_id, radar, sweep_number, elevation ...),
            copied into every row.
        masks: removal masks by name (``unet``, ``fuzzy``, ``rhohv``), True = not weather.
        echo: the sweep's echo gates.
        range_km: range of each gate along the range axis.
        bands_km: band edges, e.g. [0, 25, 50, 100, 200] (the last band is open-ended).
        counted: optional {name: gate mask}; every row also gets ``<name>_gates``, the mask's
            gates in the row's band.

    Returns:
        Rows with pair, band, POD/FAR/CSI, hits/misses/false alarms, gates scored, the share
        of echo the detected mask removes, and for the UNet vs the consensus the share of
        the consensus's weather gates it removes.
    """
    both = masks[FUZZY] & masks[RHOHV]
    agree = echo & (masks[FUZZY] == masks[RHOHV])
    masks = {**masks, CONSENSUS: both}
    edges = list(bands_km) + [np.inf]
    bands = [("all", np.ones_like(range_km, dtype=bool))] + [
        (f"{lo:g}-{hi:g} km" if np.isfinite(hi) else f">{lo:g} km",
         (range_km >= lo) & (range_km < hi)) for lo, hi in zip(edges[:-1], edges[1:])]
    rows = []
    for band, in_band in bands:
        gates = echo & in_band[None, :]
        if not gates.any():
            continue
        weather = agree & in_band[None, :] & ~both
        for detected, reference in PAIRS:
            where = (agree & in_band[None, :]) if reference == CONSENSUS else gates
            rows.append({
                **sweep, "band": band, "detected": detected, "reference": reference,
                **_scores(masks[detected], masks[reference], where),
                "echo_gates": int(gates.sum()),
                **{f"{name}_gates": int((mask & in_band[None, :]).sum())
                   for name, mask in (counted or {}).items()},
                "removed_share": float(masks[detected][gates].mean()),
                "weather_removed_share": (float(masks[detected][weather].mean())
                                          if reference == CONSENSUS and weather.any()
                                          else None),
            })
    return rows


def summed(rows: list[dict]) -> dict:
    """POD / FAR / CSI of rows' summed hits, misses and false alarms (a band or a volume as
    one), the Heidke skill score over the gates scored (echo gates, or for the consensus the
    echo gates where the references agree: counting empty gates as correct negatives would
    inflate it), plus their summed gates and the gate-weighted removed shares."""
    hits = sum(r["hits"] for r in rows)
    misses = sum(r["misses"] for r in rows)
    false_alarms = sum(r["false_alarms"] for r in rows)
    echo = sum(r["echo_gates"] for r in rows)
    out = {"hits": hits, "misses": misses, "false_alarms": false_alarms,
           "pod": hits / (hits + misses) if hits + misses else None,
           "far": false_alarms / (hits + false_alarms) if hits + false_alarms else None,
           "csi": hits / (hits + misses + false_alarms) if hits + misses + false_alarms
           else None,
           "gates": sum(r["gates"] for r in rows), "echo_gates": echo,
           "hss": None,
           "removed_share": (sum(r["removed_share"] * r["echo_gates"] for r in rows) / echo
                             if echo else None)}
    correct_negatives = out["gates"] - hits - misses - false_alarms
    if out["gates"]:
        hss = heidke_skill_score(hits, misses, false_alarms, correct_negatives)
        out["hss"] = None if np.isnan(hss) else hss
    weighted = [r for r in rows if r.get("weather_removed_share") is not None]
    out["weather_removed_share"] = None
    if weighted:
        weather = [r["gates"] - r["hits"] - r["misses"] for r in weighted]  # consensus keeps
        total = sum(weather)
        out["weather_removed_share"] = (sum(r["weather_removed_share"] * w for r, w in
                                            zip(weighted, weather)) / total if total else None)
    return out


def sweep_velocity(tree, number: int, elevation: float) -> np.ndarray | None:
    """Radial velocity on the model grid for sweep ``number``: its own, else the Doppler pass's
    at the same fixed angle (split cuts); None when the volume has neither."""
    from transforms.radar.reading import SAME_ANGLE_DEG, sweep_array, sweep_names

    names = sweep_names(tree)
    candidates = [names[number]] + [n for i, n in enumerate(names) if i != number]
    for name in candidates:
        ds = tree[name].ds
        if "VRADH" in ds.data_vars and abs(float(ds["sweep_fixed_angle"].values)
                                           - elevation) < SAME_ANGLE_DEG:
            return sweep_array(ds, channels=("VRADH",))[0][..., 0]
    return None


def volume_agreement(volume, params: ReferenceParameters, bands_km) -> tuple[list[dict], dict]:
    """Agreement rows of every dual-pol sweep of a classified volume (``DecodedVolume``), and
    the lowest sweep's masks (for the report's figure).

    Returns:
        (rows, {"unet", "fuzzy", "rhohv": masks, "dbzh": reflectivity, "ranges_m"} of the
        lowest dual-pol sweep).
    """
    from models.radar_qc.vocabulary import removed
    from transforms.radar.reading import DUAL_POL, GRID_GATE_M

    keys = volume.role_keys(DUAL_POL)
    stack = volume.stacks[DUAL_POL]
    classes, _ = volume.classes[DUAL_POL]
    rows, lowest = [], None
    for i, key in enumerate(keys):
        data = stack[i]
        echo = ~np.isnan(data[..., _DBZH])
        masks = {UNET: removed(classes[i]) & echo,
                 **reference_masks(data, sweep_velocity(volume.tree, key.sweep_number,
                                                        key.elevation), params)}
        range_km = (key.first_gate_m + GRID_GATE_M * np.arange(data.shape[1])) / 1000.0
        rows += agreement_rows({"volume_id": key.volume_id, "radar": key.radar,
                                "sweep_number": key.sweep_number, "elevation": key.elevation},
                               masks, echo, range_km, bands_km)
        if lowest is None or key.elevation < lowest[0]:
            lowest = (key.elevation, {**masks, "dbzh": data[..., _DBZH],
                                      "range_km": range_km, "sweep_number": key.sweep_number})
    return rows, (lowest[1] if lowest else {})


def tune_thresholds(sweeps, fuzzy_candidates=np.arange(0.40, 0.61, 0.05),
                    rhohv_candidates=np.arange(0.75, 0.91, 0.025)) -> dict:
    """The (fuzzy, RHOHV) thresholds with which the two references agree best with each other
    (CSI of one's removed class against the other's, summed over ``sweeps``): tuned against
    each other, never against the model under test.

    The candidates stay within the published ranges (fuzzy membership around wradlib's 0.5,
    RHOHV 0.75-0.9): with looser bounds both references agree best by removing nearly all
    echo (0.6 / 0.95 on KLBB + KLOT), which says nothing about weather.

    Args:
        sweeps: (fuzzy weather membership, RHOHV, echo mask) of each sweep.

    Returns:
        {"fuzzy_threshold", "rhohv_threshold", "csi", "grid": {(f, r): csi}}.
    """
    grid = {}
    for f in fuzzy_candidates:
        for r in rhohv_candidates:
            hits = misses = false_alarms = 0
            for membership, rhohv, echo in sweeps:
                with np.errstate(invalid="ignore"):
                    fuzzy = (membership < f)[echo]
                    rule = (rhohv < r)[echo]
                hits += int(np.sum(fuzzy & rule))
                misses += int(np.sum(rule & ~fuzzy))
                false_alarms += int(np.sum(fuzzy & ~rule))
            total = hits + misses + false_alarms
            grid[(round(float(f), 3), round(float(r), 3))] = hits / total if total else 0.0
    (f, r), csi = max(grid.items(), key=lambda kv: kv[1])
    return {"fuzzy_threshold": f, "rhohv_threshold": r, "csi": csi, "grid": grid}
