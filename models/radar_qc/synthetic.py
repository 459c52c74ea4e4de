"""Synthetic polar sweeps with known truth: the QC model's training and hold-out data.

A sweep window is ``n_azimuth`` rays of 0.5 degrees by ``n_range`` gates of 250 m, starting at
azimuth ``first_azimuth`` and gate ``first_gate``, in the model's channel order (DBZH, ZDR,
RHOHV, PHIDP). Every gate gets the class of the strongest echo there (in linear reflectivity),
and its moments are drawn from that class's physics. Gates where nothing exceeds the radar's
sensitivity are NaN in every channel with label ``NO_ECHO``.

Notes:
    Classes and the physics behind each (Park et al. 2009, Wea. Forecasting 24; Chandrasekar
    et al. 2013; Stepanian et al. 2016 for biological scatter):

    - Meteorological (``MET``): convective cells (Gaussian, 35-58 dBZ peak) and a stratiform
      field (smoothed random, 10-35 dBZ). ZDR rises with reflectivity from 0 to ~3 dB
      (oblate raindrops); RHOHV 0.97-0.995; PHIDP = system phase + 2 * integral of KDP,
      KDP growing with reflectivity above ~35 dBZ. A melting-layer ring (bright band) lowers
      RHOHV to 0.85-0.95 and raises ZDR and Z, as at real radars.
    - Biological (``BIO``): birds and insects in the boundary layer, a patchy disk around the
      radar out to 20-90 km, -5 to 22 dBZ; ZDR high and noisy (mean 2-6 dB, sd 2); RHOHV
      0.3-0.85; PHIDP noisy (large backscatter phase).
    - Clutter and noise (``CLUTTER``): ground clutter patches within 45 km (30-65 dBZ,
      ZDR sd 3 dB, RHOHV 0.5-0.95, PHIDP noisy), speckle noise near the sensitivity limit and,
      sometimes, a sun-spike radial (RHOHV near 0.1-0.6, random PHIDP).

    - Doppler moments (single-polarization model; drawn from their own random stream so the
      dual-pol data stay as they were): radial velocity of a wind that turns and strengthens
      with range (height), folded at a Nyquist velocity of 8-32 m/s; birds fly 8-15 m/s
      across it (insects drift with it); ground clutter is near 0 m/s with a narrow spectrum,
      noise and sun spikes have any velocity and a broad spectrum. Spectrum width: 1-4 m/s in
      rain (more in convection), 3-7 m/s in biological echo. Some windows have no Doppler
      moments at all (legacy surveillance scans) or none beyond the Doppler range.

    - Domain randomisation (``randomise=True``; its own random stream again, so the plain
      windows stay as they were): what differs between real radars and days. Clear-air return
      (Bragg scatter and weak boundary-layer echo near the radar, ``MET``: RHOHV high, ZDR near
      0); second-trip echo (radially stretched weak echo folded in from beyond the
      unambiguous range, ``CLUTTER``); anomalous propagation (ground clutter patches out to
      120 km, ``CLUTTER``); the radar's sensitivity (-4 to +8 dB), its ZDR calibration (offset,
      sd 0.3 dB), noisier ZDR and PHIDP estimators, and noise-corrected RHOHV (as the WSR-88D
      reports it: no low bias at low SNR, spread instead, values above 1) in half the windows.

    Measurement noise grows as the signal-to-noise ratio falls: the radar's sensitivity is
    ``-42 + 20 log10(range / 1 km)`` dBZ, RHOHV is biased low by ``SNR / (1 + SNR)`` and its
    noise grows at low SNR. This is what makes a fixed RHOHV threshold remove weak
    precipitation at long range and in the melting layer, and what spatial context can fix.
"""

import numpy as np
from scipy import ndimage

from models.radar_qc.vocabulary import BIO, CHANNELS, CLUTTER, MET, NO_ECHO, SYNTHETIC_MOMENTS

GATE_KM = 0.25
RAY_DEG = 0.5


def sensitivity_dbz(range_km: np.ndarray) -> np.ndarray:
    """Smallest detectable reflectivity at each range (a WSR-88D-like noise floor)."""
    return -42.0 + 20.0 * np.log10(np.maximum(range_km, 0.5))


def _to_linear(dbz):
    return np.power(10.0, dbz / 10.0)


def _smooth_noise(rng, shape, sigma):
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma, mode="wrap")
    return field / max(field.std(), 1e-6)


def _geometry(n_azimuth, n_range, first_azimuth, first_gate):
    azimuth = np.deg2rad(first_azimuth + (np.arange(n_azimuth) + 0.5) * RAY_DEG)
    range_km = (first_gate + np.arange(n_range) + 0.5) * GATE_KM
    x = range_km[None, :] * np.sin(azimuth)[:, None]
    y = range_km[None, :] * np.cos(azimuth)[:, None]
    return range_km, x, y


def _precipitation(rng, range_km, x, y):
    """Reflectivity (dBZ, -inf where none) of convective cells and a stratiform field."""
    shape = x.shape
    linear = np.zeros(shape)
    x_mid, y_mid = x.mean(), y.mean()
    extent = max(np.ptp(x), np.ptp(y), 10.0)
    for _ in range(rng.integers(0, 7)):
        cx = x_mid + rng.uniform(-0.7, 0.7) * extent
        cy = y_mid + rng.uniform(-0.7, 0.7) * extent
        radius = rng.uniform(3.0, 15.0)
        peak = rng.uniform(35.0, 58.0)
        distance2 = ((x - cx) ** 2 + (y - cy) ** 2) / radius ** 2
        linear += _to_linear(peak - 12.0 * distance2) * (distance2 < 4.0)
    if rng.random() < 0.6:
        field = _smooth_noise(rng, shape, sigma=rng.uniform(6, 20))
        cover = rng.uniform(-0.6, 0.8)
        stratiform = np.where(field > cover, 10.0 + 8.0 * (field - cover) + rng.uniform(0, 15),
                              -np.inf)
        linear += _to_linear(np.minimum(stratiform, 40.0))
    with np.errstate(divide="ignore"):
        return 10.0 * np.log10(linear)


def _biological(rng, range_km, shape):
    if rng.random() < 0.35:
        return np.full(shape, -np.inf)
    reach = rng.uniform(20.0, 90.0)
    level = rng.uniform(-5.0, 22.0)
    patches = 6.0 * _smooth_noise(rng, shape, sigma=rng.uniform(2, 8))
    dbz = level + patches - 25.0 * (range_km[None, :] / reach) ** 2
    return np.where(range_km[None, :] < 1.5 * reach, dbz, -np.inf)


def _clutter(rng, range_km, shape):
    dbz = np.full(shape, -np.inf)
    near = range_km < rng.uniform(15.0, 45.0)
    if near.any() and rng.random() < 0.8:
        blobs = _smooth_noise(rng, shape, sigma=1.5)
        threshold = rng.uniform(1.0, 2.2)
        level = rng.uniform(30.0, 50.0)
        hit = (blobs > threshold) & near[None, :]
        dbz = np.where(hit, level + 8.0 * (blobs - threshold) + rng.normal(0, 4, shape), dbz)
    return dbz


def _noise(rng, range_km, shape):
    floor = sensitivity_dbz(range_km)[None, :]
    dbz = np.where(rng.random(shape) < rng.uniform(0.0, 0.04),
                   floor + rng.uniform(0.0, 4.0, shape), -np.inf)
    if rng.random() < 0.3:  # a sun spike: one or two rays of noise along the whole range
        ray = rng.integers(0, shape[0])
        rays = slice(ray, ray + rng.integers(1, 3))
        dbz[rays] = np.maximum(dbz[rays], floor + rng.uniform(2.0, 10.0, dbz[rays].shape))
    return dbz


def _clear_air(rng, range_km, shape):
    """Bragg scatter and weak boundary-layer return around the radar (meteorological)."""
    if rng.random() < 0.5:
        return np.full(shape, -np.inf)
    reach = rng.uniform(15.0, 70.0)
    level = rng.uniform(-12.0, 8.0)
    dbz = level + 3.0 * _smooth_noise(rng, shape, sigma=rng.uniform(2, 6)) \
        - 20.0 * (range_km[None, :] / reach) ** 2
    return np.where(range_km[None, :] < 1.3 * reach, dbz, -np.inf)


def _second_trip(rng, range_km, shape):
    """Weak echo from beyond the unambiguous range: stretched along the rays, in a sector."""
    dbz = np.full(shape, -np.inf)
    if rng.random() < 0.35:
        # Two draws, one used: the seeded windows stay those the README's figures come from.
        first_ray = rng.integers(0, shape[0], 2)[0]
        width = rng.integers(4, max(5, shape[0] // 2))
        sector = (np.arange(shape[0]) - first_ray) % shape[0] < width
        streaks = ndimage.gaussian_filter(rng.standard_normal(shape), (0.7, 12.0), mode="wrap")
        streaks /= max(streaks.std(), 1e-6)
        start = rng.uniform(0.0, range_km[-1])
        hit = sector[:, None] & (range_km[None, :] > start) & (streaks > rng.uniform(0.0, 1.0))
        dbz[hit] = rng.uniform(0.0, 20.0) + 4.0 * streaks[hit]
    return dbz


def _anomalous_propagation(rng, range_km, shape):
    """Ground clutter from a ducted beam: patches well beyond the usual clutter ring."""
    dbz = np.full(shape, -np.inf)
    if rng.random() < 0.3:
        blobs = _smooth_noise(rng, shape, sigma=rng.uniform(1.5, 4.0))
        threshold = rng.uniform(1.2, 2.2)
        ring = (range_km > rng.uniform(15.0, 40.0)) & (range_km < rng.uniform(60.0, 120.0))
        hit = (blobs > threshold) & ring[None, :]
        dbz[hit] = rng.uniform(20.0, 45.0) + 8.0 * (blobs[hit] - threshold)
    return dbz


# Class of each echo source, in the order synthetic_sweep stacks them (precipitation,
# biological, ground clutter, noise, then the randomised ones: clear air, second trip, AP).
SOURCE_CLASSES = np.array([MET, BIO, CLUTTER, CLUTTER, MET, CLUTTER, CLUTTER], dtype=np.uint8)
# How the Doppler moments treat each source: 0 air, 1 biological, 2 ground, 3 noise.
SOURCE_DOPPLER = np.array([0, 1, 2, 3, 0, 3, 2])


def _doppler(rng, azimuth, range_km, dbz, strongest, labels, noise_scale):
    """Radial velocity (m/s, folded) and spectrum width (m/s) of every gate, NaN where the
    window has no Doppler measurement."""
    shape = labels.shape
    wind = rng.uniform(0.0, 30.0) * (0.5 + 0.5 * np.minimum(range_km / 150.0, 1.0))[None, :]
    direction = rng.uniform(0.0, 2 * np.pi) + 0.4 * np.minimum(range_km / 200.0, 1.0)[None, :]
    air = wind * np.cos(azimuth[:, None] - direction)
    turbulence = _smooth_noise(rng, shape, sigma=3.0)
    velocity = air + 1.5 * turbulence
    width = 1.0 + 3.0 * np.clip((dbz - 20.0) / 30.0, 0.0, 1.0) + rng.gamma(2.0, 0.3, shape)

    is_bio = labels == BIO
    if rng.random() < 0.6:  # birds: their own heading and air speed on top of the wind
        heading = rng.uniform(0.0, 2 * np.pi)
        own = rng.uniform(8.0, 15.0) * np.cos(azimuth[:, None] - heading)
    else:  # insects drift with the wind
        own = np.zeros(shape)
    velocity[is_bio] = (air + own + rng.normal(0.0, 3.0, shape))[is_bio]
    width[is_bio] = rng.uniform(3.0, 7.0, shape)[is_bio]

    nyquist = rng.uniform(8.0, 32.0)
    ground = (strongest == 2) & (labels == CLUTTER)
    velocity[ground] = rng.normal(0.0, 0.7, shape)[ground]
    width[ground] = rng.uniform(0.3, 1.5, shape)[ground]
    noise = (strongest == 3) & (labels == CLUTTER)
    velocity[noise] = rng.uniform(-nyquist, nyquist, shape)[noise]
    width[noise] = rng.uniform(4.0, 10.0, shape)[noise]

    velocity = velocity + rng.normal(0.0, 0.5, shape) * noise_scale
    velocity = (velocity + nyquist) % (2 * nyquist) - nyquist
    width = np.clip(width + rng.normal(0.0, 0.3, shape) * noise_scale, 0.0, nyquist)
    if rng.random() < 0.2:  # a surveillance-only scan: reflectivity alone
        velocity[:] = np.nan
    elif rng.random() < 0.3:  # beyond the Doppler scan's range
        velocity[:, range_km > rng.uniform(100.0, 300.0)] = np.nan
    width[np.isnan(velocity)] = np.nan
    return velocity, width


def synthetic_sweep(rng: np.random.Generator, n_azimuth: int = 128, n_range: int = 256,
                    first_azimuth: float = 0.0, first_gate: int = 0,
                    doppler_rng: np.random.Generator | None = None,
                    domain_rng: np.random.Generator | None = None):
    """One synthetic sweep window and its truth.

    Args:
        doppler_rng: when given, velocity and spectrum width are drawn from it and added as
            channels 5 and 6 (``SYNTHETIC_MOMENTS``); ``rng`` draws exactly as without them.
        domain_rng: when given, the window is domain-randomised (see the module notes) with
            draws from it; ``rng`` draws exactly as without it.

    Returns:
        (data, labels): float32 (n_azimuth, n_range, 4) moments in CHANNELS order (6 in
        SYNTHETIC_MOMENTS order with ``doppler_rng``) with NaN where no echo, and uint8
        (n_azimuth, n_range) labels (MET, BIO, CLUTTER or NO_ECHO).
    """
    shape = (n_azimuth, n_range)
    range_km, x, y = _geometry(n_azimuth, n_range, first_azimuth, first_gate)
    sources = np.stack([
        _precipitation(rng, range_km, x, y),
        _biological(rng, range_km, shape),
        _clutter(rng, range_km, shape),
        _noise(rng, range_km, shape),
    ])
    if domain_rng is not None:
        sources = np.concatenate([sources, np.stack([
            _clear_air(domain_rng, range_km, shape),
            _second_trip(domain_rng, range_km, shape),
            _anomalous_propagation(domain_rng, range_km, shape),
        ])])
    # Melting layer: a ring where rain's reflectivity and ZDR rise and RHOHV falls.
    melting_centre = rng.uniform(20.0, 200.0)
    melting = np.abs(range_km - melting_centre) < rng.uniform(2.0, 8.0)
    sources[0] = np.where(melting[None, :], sources[0] + 5.0, sources[0])

    floor = sensitivity_dbz(range_km)[None, :]
    if domain_rng is not None:
        floor = floor + domain_rng.uniform(-4.0, 8.0)
    strongest = sources.argmax(axis=0)
    dbz = sources.max(axis=0)
    echo = dbz > floor
    labels = SOURCE_CLASSES[strongest]
    labels[~echo] = NO_ECHO

    snr_db = np.where(echo, dbz - floor, 0.0)
    snr = _to_linear(snr_db)
    noise_scale = 1.0 + 4.0 * np.exp(-snr_db / 6.0)  # estimates get noisier at low SNR

    zdr = np.zeros(shape)
    rhohv = np.zeros(shape)
    phidp_noise = np.zeros(shape)
    is_met, is_bio, is_clutter = labels == MET, labels == BIO, labels == CLUTTER

    zdr_rain = np.clip(0.06 * (dbz - 15.0), 0.0, 3.0) + melting[None, :] * 0.8
    zdr[is_met] = zdr_rain[is_met] + rng.normal(0, 0.2, shape)[is_met] * noise_scale[is_met]
    rho_rain = np.where(melting[None, :], rng.uniform(0.85, 0.95), rng.uniform(0.975, 0.995))
    rhohv[is_met] = np.broadcast_to(rho_rain, shape)[is_met]
    phidp_noise[is_met] = rng.normal(0, 2.0, shape)[is_met] * noise_scale[is_met]

    bio_zdr = rng.uniform(2.0, 6.0)
    zdr[is_bio] = rng.normal(bio_zdr, 2.0, shape)[is_bio]
    rhohv[is_bio] = rng.beta(4.0, 2.5, shape)[is_bio] * 0.6 + 0.25
    phidp_noise[is_bio] = rng.normal(0, 25.0, shape)[is_bio]

    zdr[is_clutter] = rng.normal(0.0, 3.0, shape)[is_clutter]
    rhohv[is_clutter] = rng.uniform(0.1, 0.95, shape)[is_clutter]
    phidp_noise[is_clutter] = rng.uniform(-180.0, 180.0, shape)[is_clutter]

    # Low SNR biases RHOHV low and spreads it (all classes: it is the measurement), unless
    # the radar corrects it for noise, which leaves the spread.
    spread = rng.normal(0, 0.01, shape) * noise_scale
    if domain_rng is not None:
        zdr += domain_rng.normal(0.0, 0.3)  # calibration offset; gates without echo are NaN
        zdr += domain_rng.uniform(0.0, 1.0) * domain_rng.standard_normal(shape) * noise_scale
        phidp_noise *= domain_rng.uniform(1.0, 2.0)
    if domain_rng is not None and domain_rng.random() < 0.5:
        rhohv = rhohv + 2.0 * spread
    else:
        rhohv = rhohv * snr / (1.0 + snr) + spread
    rhohv = np.clip(rhohv, 0.05, 1.05)

    # KDP from rain above ~35 dBZ (deg/km), integrated two-way along each ray.
    kdp = np.where(is_met, np.power(10.0, (np.where(is_met, dbz, 0.0) - 45.0) / 15.0), 0.0)
    system_phase = rng.uniform(0.0, 180.0)
    phidp = (system_phase + 2.0 * np.cumsum(kdp, axis=1) * GATE_KM + phidp_noise) % 360.0

    moments = [dbz, zdr, rhohv, phidp]
    if doppler_rng is not None:
        azimuth = np.deg2rad(first_azimuth + (np.arange(n_azimuth) + 0.5) * RAY_DEG)
        moments += _doppler(doppler_rng, azimuth, range_km, dbz, SOURCE_DOPPLER[strongest],
                            labels, noise_scale)
    data = np.stack(moments, axis=-1).astype(np.float32)
    data[~echo] = np.nan
    return data, labels


def synthetic_set(seed: int, count: int, n_azimuth: int = 128, n_range: int = 256,
                  max_gate: int = 1840, channels: tuple[str, ...] = CHANNELS,
                  randomise: bool = False):
    """``count`` windows at random azimuths and ranges (weighted towards the radar, where
    biological and clutter echoes live), with the moments ``channels`` (any of
    ``SYNTHETIC_MOMENTS``). The same seed gives the same windows and labels whatever the
    channels, so the dual- and single-polarization models are scored on the same truth.
    ``randomise`` domain-randomises every window (module notes) from a stream of its own.

    Returns:
        (data float32 (count, n_azimuth, n_range, len(channels)),
        labels uint8 (count, n_azimuth, n_range)).
    """
    unknown = sorted(set(channels) - set(SYNTHETIC_MOMENTS))
    if unknown:
        raise ValueError(f"the synthetic generator has no {', '.join(unknown)}")
    rng = np.random.default_rng(seed)
    with_doppler = not set(channels) <= set(CHANNELS)
    doppler_rng = np.random.default_rng([seed, 1]) if with_doppler else None
    domain_rng = np.random.default_rng([seed, 2]) if randomise else None
    drawn = SYNTHETIC_MOMENTS if with_doppler else CHANNELS
    pick = [drawn.index(c) for c in channels]
    data = np.empty((count, n_azimuth, n_range, len(channels)), dtype=np.float32)
    labels = np.empty((count, n_azimuth, n_range), dtype=np.uint8)
    for i in range(count):
        first_gate = int((max_gate - n_range) * rng.random() ** 2)
        window, labels[i] = synthetic_sweep(
            rng, n_azimuth, n_range, rng.uniform(0.0, 360.0), first_gate, doppler_rng,
            domain_rng)
        data[i] = window[..., pick]
    return data, labels
