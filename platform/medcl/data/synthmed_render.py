"""Appearance and rendering for ``synthmed``: the domain table and vectorised image drawing (numpy only).

Each ``Domain`` says how its background, lesions and noise look (and carries its clinical wording);
``render`` draws a batch of images, one per finding index, with optional acquisition ``SiteShift``.
All geometry is in normalised coordinates ``[-1, 1]`` (y down), so an image looks the same at any
size. Every draw comes from the caller's ``rng``, in a fixed order that does not depend on labels.
The benchmark, task building, captions and prompts live in ``medcl.data.synthmed``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

FINDINGS = ("normal", "nodule", "cyst", "calcification", "fracture")
_F32 = np.float32

Colour = tuple[float, ...]


def _u(rng: np.random.Generator, lo: float, hi: float, shape) -> np.ndarray:
    return rng.uniform(lo, hi, shape).astype(_F32)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return (0.5 * (1.0 + np.tanh(0.5 * z))).astype(_F32, copy=False)


def _blend(img: np.ndarray, colour: Colour, weight: np.ndarray) -> np.ndarray:
    """Alpha-blend ``img (n, S, S, C)`` toward ``colour`` with per-pixel ``weight (n, S, S)``."""
    return img + weight[..., None] * (np.asarray(colour, _F32) - img)


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates in ``[-1, 1]``: ``yy (S, 1)`` (down) and ``xx (1, S)`` (right)."""
    c = ((np.arange(size, dtype=_F32) + 0.5) / size * 2.0 - 1.0).astype(_F32)
    return c[:, None], c[None, :]


def _smooth(rng: np.random.Generator, n: int, size: int, grid: int = 4, channels: int = 1) -> np.ndarray:
    """Low-frequency texture ``(n, S, S)`` (``(n, S, S, C)`` if ``channels > 1``): a ``grid x grid``
    standard-normal field, bilinearly upsampled."""
    pos = (np.arange(size, dtype=_F32) + 0.5) / size * (grid - 1)
    m = np.maximum(0.0, 1.0 - np.abs(pos[:, None] - np.arange(grid, dtype=_F32)[None, :])).astype(_F32)
    out = m @ rng.standard_normal((n, channels, grid, grid), dtype=_F32) @ m.T  # (n, C, S, S)
    return out[:, 0] if channels == 1 else np.ascontiguousarray(out.transpose(0, 2, 3, 1))


def _splat_blur(ys: np.ndarray, xs: np.ndarray, keep: np.ndarray, size: int, sigma: float) -> np.ndarray:
    """Gaussian dots of peak 1 at normalised points ``(n, k)`` where ``keep``; returns ``(n, S, S)`` in [0, 1]."""
    n = ys.shape[0]
    iy = np.clip(((ys + 1) / 2 * size).astype(int), 0, size - 1)
    ix = np.clip(((xs + 1) / 2 * size).astype(int), 0, size - 1)
    canvas = np.zeros((n, size, size), _F32)
    rows = np.broadcast_to(np.arange(n)[:, None], ys.shape)
    canvas[rows[keep], iy[keep], ix[keep]] = 1.0
    px = np.arange(size, dtype=_F32)
    k = np.exp(-((px[:, None] - px[None, :]) * 2.0 / size) ** 2 / (2 * sigma**2)).astype(_F32)
    return np.minimum(1.0, k @ canvas @ k.T)


# Domain backgrounds: ``(rng, n, yy, xx) -> (image (n, S, S, C) float in ~[0, 1], field of view (n, S, S))``
def _bg_xray(rng, n, yy, xx):
    dx, b = _u(rng, -0.05, 0.05, (n, 1, 1)), _u(rng, -0.06, 0.06, (n, 1, 1))
    ax = np.abs(xx - dx)
    lung = _sigmoid((1 - ((ax - 0.45) / 0.33) ** 2 - ((yy + 0.05) / 0.72) ** 2) / 0.15)
    ribs = np.maximum(0.0, np.cos(2 * np.pi * (4.5 * yy + 1.2 * ax**2))) ** 4
    img = 0.62 + b - 0.36 * lung + 0.25 * np.exp(-(((xx - dx) / 0.16) ** 2)) + 0.07 * ribs * lung
    img = img + 0.05 * _smooth(rng, n, xx.shape[1])
    return img[..., None], np.ones_like(img)


def _fan(yy, xx):
    ry = yy + 1.05
    return np.sqrt(xx**2 + ry**2), np.arctan2(xx, ry)


def _bg_ultrasound(rng, n, yy, xx):
    rad, th = _fan(yy, xx)
    fov = _sigmoid((0.72 - np.abs(th)) / 0.03) * _sigmoid((1.95 - rad) / 0.03) * _sigmoid((rad - 0.15) / 0.03)
    layers = 0.08 * np.cos(rad * _u(rng, 9, 13, (n, 1, 1))) * np.exp(-rad)
    img = (0.5 + _u(rng, -0.05, 0.05, (n, 1, 1)) + layers + 0.08 * _smooth(rng, n, xx.shape[1])) * (1 - 0.11 * rad)
    return img[..., None], np.broadcast_to(fov, img.shape)


def _bg_fundus(rng, n, yy, xx):
    rho2 = xx**2 + yy**2
    fov = _sigmoid((0.92 - np.sqrt(rho2)) / 0.02)
    base = np.asarray((0.80, 0.36, 0.13), _F32) * _u(rng, 0.85, 1.1, (n, 1, 1, 1))
    img = base * (1 - 0.35 * rho2)[..., None] + 0.04 * _smooth(rng, n, xx.shape[1], channels=3)
    x0 = rng.choice(np.asarray([-1, 1], _F32), (n, 1, 1)) * _u(rng, 0.4, 0.5, (n, 1, 1))
    y0 = _u(rng, -0.1, 0.1, (n, 1, 1))
    sign = np.asarray([1, 1, -1, -1], _F32).reshape(1, 4, 1, 1)  # two upper, two lower arcades
    u = np.abs(xx - x0)[:, None]
    f = y0[:, None] + sign * (_u(rng, 0.3, 1.4, (n, 4, 1, 1)) * u**2 + _u(rng, 0.05, 0.4, (n, 4, 1, 1)) * u)
    vessels = np.exp(-(((yy - f) / 0.035) ** 2)).max(axis=1)
    img = _blend(img, (0.45, 0.06, 0.04), 0.75 * vessels)
    disc = _sigmoid((0.13 - np.sqrt((xx - x0) ** 2 + (yy - y0) ** 2)) / 0.025)
    return _blend(img, (1.0, 0.92, 0.65), 0.95 * disc), np.broadcast_to(fov, img.shape[:3])


def _bg_histology(rng, n, yy, xx):
    size = xx.shape[1]
    img = np.asarray((0.93, 0.64, 0.80), _F32) + 0.07 * _smooth(rng, n, size, grid=6, channels=3)
    k = 22
    ys, xs = _u(rng, -1, 1, (n, k)), _u(rng, -1, 1, (n, k))
    nuclei = _splat_blur(ys, xs, rng.random((n, k)) < 0.8, size, 0.04)
    img = _blend(img, (0.38, 0.20, 0.56), 0.7 * nuclei)
    return img, np.ones(img.shape[:3], _F32)


def _bg_ct(rng, n, yy, xx):
    ax, ay = _u(rng, 0.8, 0.9, (n, 1, 1)), _u(rng, 0.58, 0.68, (n, 1, 1))
    e = np.sqrt((xx / ax) ** 2 + (yy / ay) ** 2)
    body = _sigmoid((1 - e) / 0.02)
    fat = _sigmoid((e - 0.88) / 0.02)
    liver = _sigmoid((1 - ((xx + 0.3) / 0.4) ** 2 - ((yy + 0.1) / 0.35) ** 2) / 0.1)
    img = body * (0.5 - 0.2 * fat + 0.08 * liver + 0.04 * _smooth(rng, n, xx.shape[1]))
    spine = _sigmoid((0.11 - np.sqrt(xx**2 + (yy - 0.45 * ay) ** 2)) / 0.015)
    return _blend(img[..., None], (0.95,), spine), body


def _bg_dermoscopy(rng, n, yy, xx):
    rho = np.sqrt(xx**2 + yy**2)
    fov = _sigmoid((0.97 - rho) / 0.03)
    tone = np.asarray((0.90, 0.70, 0.58), _F32) * _u(rng, 0.75, 1.05, (n, 1, 1, 1))
    img = tone * (1 - 0.15 * rho**2)[..., None] + 0.035 * _smooth(rng, n, xx.shape[1], grid=5, channels=3)
    th, k = _u(rng, 0, np.pi, (n, 3, 1, 1)), _u(rng, -0.4, 0.4, (n, 3, 1, 1))
    x0, y0 = _u(rng, -0.8, 0.8, (n, 3, 1, 1)), _u(rng, -0.8, 0.8, (n, 3, 1, 1))
    t = (xx - x0) * np.cos(th) + (yy - y0) * np.sin(th)
    nrm = (yy - y0) * np.cos(th) - (xx - x0) * np.sin(th)
    present = (rng.random((n, 3, 1, 1)) < 0.6).astype(_F32)
    hair = (np.exp(-(((nrm - k * t**2) / 0.03) ** 2)) * present).max(axis=1)
    return _blend(img, (0.18, 0.10, 0.06), 0.85 * hair), np.broadcast_to(fov, img.shape[:3])


# Noise models: ``(rng, img, scale) -> img``
def _normalish(rng, shape) -> np.ndarray:
    """Zero-mean, unit-variance triangular noise (two uniforms): close enough to Gaussian, 2x cheaper."""
    u = rng.random(shape, dtype=_F32) + rng.random(shape, dtype=_F32)
    return (u - 1.0) * np.float32(np.sqrt(6.0))


def _poisson(rng, img, scale):
    return img + (0.05 * scale) * np.sqrt(np.maximum(img, 0)) * _normalish(rng, img.shape)


def _speckle(rng, img, scale):
    k = 20.0 / scale**2  # multiplicative gamma speckle with mean 1 and std 0.22 * scale
    return img * (rng.gamma(k, 1.0 / k, img.shape).astype(_F32))


def _gaussian(sigma: float) -> Callable:
    def noise(rng, img, scale):
        return img + (sigma * scale) * _normalish(rng, img.shape)

    return noise


# Domains
@dataclass(frozen=True)
class Domain:
    """One imaging domain: how its background, lesions (``style``) and noise look, and its wording.

    ``style`` maps a lesion map (``nodule``, ``cyst_inner``, ``cyst_rim``, ``calcification``,
    ``fracture``, optionally ``cyst_posterior`` / ``calcification_shadow``) to ``(colour, alpha)``;
    maps are blended in that order. ``region(y, x)`` says where a lesion centre may lie.
    """

    name: str
    modality: str
    label: str
    article: str
    noun: str
    channels: int
    background: Callable
    region: Callable
    noise: Callable
    style: dict
    clinical: dict


def _in_fan(y, x):
    rad, th = _fan(y, x)
    return (np.abs(th) < 0.5) & (rad > 0.5) & (rad < 1.6)


DOMAINS: dict[str, Domain] = {d.name: d for d in (
    Domain("xray", "xray", "chest X-ray-like", "a", "chest radiograph", 1, _bg_xray,
           lambda y, x: ((np.abs(x) - 0.45) / 0.3) ** 2 + (y / 0.6) ** 2 < 1, _poisson,
           {"nodule": ((0.95,), 0.6), "cyst_inner": ((0.45,), 0.3), "cyst_rim": ((0.98,), 0.75),
            "calcification": ((1.0,), 1.0), "fracture": ((0.9,), 0.7)},
           {"nodule": "a pulmonary nodule", "cyst": "a thin-walled lung cyst",
            "calcification": "clustered calcified granulomas", "fracture": "a rib fracture"}),
    Domain("ultrasound", "ultrasound", "ultrasound-like", "an", "ultrasound scan", 1, _bg_ultrasound, _in_fan,
           _speckle,
           {"nodule": ((0.08,), 0.85), "cyst_inner": ((0.02,), 0.95), "cyst_rim": ((0.9,), 0.7),
            "cyst_posterior": ((0.9,), 0.4), "calcification": ((1.0,), 1.0),
            "calcification_shadow": ((0.05,), 0.6), "fracture": ((0.95,), 0.8)},
           {"nodule": "a hypoechoic nodule", "cyst": "an anechoic cyst with posterior enhancement",
            "calcification": "echogenic calcifications with acoustic shadowing",
            "fracture": "a cortical fracture line"}),
    Domain("fundus", "fundus", "fundus photograph-like", "a", "fundus photograph", 3, _bg_fundus,
           lambda y, x: x**2 + y**2 < 0.6**2, _gaussian(0.02),
           {"nodule": ((0.98, 0.88, 0.35), 0.85), "cyst_inner": ((0.5, 0.12, 0.05), 0.6),
            "cyst_rim": ((0.95, 0.75, 0.45), 0.7), "calcification": ((1.0, 1.0, 0.95), 1.0),
            "fracture": ((0.95, 0.8, 0.65), 0.75)},
           {"nodule": "a yellow exudate-like nodule", "cyst": "a round cystoid lesion",
            "calcification": "drusen-like calcific dots", "fracture": "a linear retinal fold"}),
    Domain("histology", "pathology", "H&E histology-like", "an", "H&E histology slide", 3, _bg_histology,
           lambda y, x: (np.abs(y) < 0.75) & (np.abs(x) < 0.75), _gaussian(0.03),
           {"nodule": ((0.25, 0.08, 0.38), 0.85), "cyst_inner": ((0.98, 0.95, 0.97), 0.9),
            "cyst_rim": ((0.40, 0.20, 0.60), 0.8), "calcification": ((0.08, 0.10, 0.62), 1.0),
            "fracture": ((1.0, 1.0, 1.0), 0.9)},
           {"nodule": "a dense nodule of tumour cells", "cyst": "a cystic gland lumen",
            "calcification": "basophilic calcifications", "fracture": "a tissue tear artefact"}),
    Domain("ct", "ct", "CT-like", "a", "CT slice", 1, _bg_ct,
           lambda y, x: (x / 0.55) ** 2 + ((y + 0.08) / 0.33) ** 2 < 1, _gaussian(0.03),
           {"nodule": ((0.82,), 0.8), "cyst_inner": ((0.28,), 0.85), "cyst_rim": ((0.7,), 0.5),
            "calcification": ((1.0,), 1.0), "fracture": ((0.08,), 0.8)},
           {"nodule": "an enhancing soft-tissue nodule", "cyst": "a fluid-density cyst",
            "calcification": "dense calcifications", "fracture": "a fracture line"}),
    Domain("dermoscopy", "dermatology", "dermoscopy-like", "a", "dermoscopy image", 3, _bg_dermoscopy,
           lambda y, x: x**2 + y**2 < 0.65**2, _gaussian(0.02),
           {"nodule": ((0.42, 0.24, 0.14), 0.85), "cyst_inner": ((0.98, 0.92, 0.78), 0.8),
            "cyst_rim": ((0.85, 0.35, 0.35), 0.7), "calcification": ((1.0, 1.0, 1.0), 1.0),
            "fracture": ((0.75, 0.12, 0.12), 0.85)},
           {"nodule": "a pigmented nodule", "cyst": "a milia-like cyst",
            "calcification": "white calcinosis dots", "fracture": "a linear excoriation"}),
)}
DOMAIN_NAMES = tuple(DOMAINS)


# Lesions
def _sample_centres(rng, n: int, region: Callable) -> tuple[np.ndarray, np.ndarray]:
    """``n`` lesion centres drawn uniformly from ``region`` by vectorised rejection sampling."""
    ys, xs, got = [], [], 0
    while got < n:
        c = _u(rng, -0.8, 0.8, (2, 4 * n + 16))
        ok = region(c[0], c[1])
        ys.append(c[0][ok])
        xs.append(c[1][ok])
        got += int(ok.sum())
    return np.concatenate(ys)[:n], np.concatenate(xs)[:n]


def _geometry(rng, n: int, region: Callable) -> dict[str, np.ndarray]:
    """Per-image lesion parameters (drawn for every image so the stream does not depend on labels)."""
    cy, cx = _sample_centres(rng, n, region)
    ang, rad = _u(rng, 0, 2 * np.pi, (n, 6)), 0.17 * np.sqrt(rng.random((n, 6), dtype=_F32))
    return {"cy": cy, "cx": cx, "r": _u(rng, 0.13, 0.24, n), "rc": _u(rng, 0.17, 0.28, n),
            "theta": _u(rng, 0, np.pi, n), "half": _u(rng, 0.28, 0.5, n), "ndots": rng.integers(3, 7, n),
            "dy": cy[:, None] + rad * np.sin(ang), "dx": cx[:, None] + rad * np.cos(ang)}


def _lesion_maps(g: dict, kinds: np.ndarray, yy, xx, wanted) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Lesion maps for the findings ``kinds`` (indices into FINDINGS): ``key -> (rows, map (len(rows), S, S))``
    with values in [0, 1]; only the images that carry that lesion are drawn (sparse, so blending is cheap)."""
    size = xx.shape[1]
    px = 2.0 / size
    sel = {f: np.flatnonzero(kinds == FINDINGS.index(f)) for f in FINDINGS[1:]}

    def col(key, i):
        return g[key][i][:, None, None]

    def dist(i):
        return np.sqrt((yy - col("cy", i)) ** 2 + (xx - col("cx", i)) ** 2)

    i = sel["nodule"]
    maps = {"nodule": (i, _sigmoid((col("r", i) - dist(i)) / (0.2 * col("r", i))))}
    i, wr = sel["cyst"], max(0.035, 0.6 * px)
    d, rc = dist(i), col("rc", i)
    maps["cyst_inner"] = (i, _sigmoid((rc - wr - d) / (0.5 * px)))
    maps["cyst_rim"] = (i, np.exp(-(((d - rc) / wr) ** 2)))
    i = sel["calcification"]
    keep = np.arange(6)[None, :] < g["ndots"][i][:, None]
    maps["calcification"] = (i, _splat_blur(g["dy"][i], g["dx"][i], keep, size, max(0.03, 0.6 * px)))
    i = sel["fracture"]
    uy, ux = np.sin(col("theta", i)), np.cos(col("theta", i))
    py, pxx = yy - col("cy", i), xx - col("cx", i)
    t = np.clip(py * uy + pxx * ux, -col("half", i), col("half", i))
    maps["fracture"] = (i, np.exp(-(((py - t * uy) ** 2 + (pxx - t * ux) ** 2) / max(0.03, 0.6 * px) ** 2)))
    for key, f, r in (("cyst_posterior", "cyst", "rc"), ("calcification_shadow", "calcification", None)):
        if key in wanted:  # ultrasound: bright band (enhancement) / dark band (shadow) below the lesion
            i = sel[f]
            w, below = (col(r, i) if r else 0.15), yy - col("cy", i)
            band = np.exp(-(((xx - col("cx", i)) / w) ** 4)) * _sigmoid((below - w) / 0.05) * np.exp(-below / 0.6)
            maps[key] = (i, band)
    return maps


# Site shift and rendering
@dataclass(frozen=True)
class SiteShift:
    """A mild acquisition-site shift: ``gain * x ** gamma`` per channel and a noise-level factor."""

    gain: tuple[float, ...] = (1.0, 1.0, 1.0)
    gamma: float = 1.0
    noise: float = 1.0

    @classmethod
    def draw(cls, rng: np.random.Generator) -> "SiteShift":
        gain = rng.uniform(0.9, 1.1) * rng.uniform(0.96, 1.04, 3)
        return cls(tuple(float(v) for v in gain), float(rng.uniform(0.85, 1.18)), float(rng.uniform(0.8, 1.25)))


def render(domain: Domain, rng: np.random.Generator, kinds: np.ndarray, size: int, shift: SiteShift = SiteShift()):
    """Draw one image per finding index in ``kinds``: ``(uint8 (n, S, S, C), lesion geometry dict)``."""
    yy, xx = _grid(size)
    img, fov = domain.background(rng, len(kinds), yy, xx)
    geom = _geometry(rng, len(kinds), domain.region)
    maps = _lesion_maps(geom, kinds, yy, xx, domain.style.keys())
    for key, (colour, alpha) in domain.style.items():
        rows, m = maps[key]
        img[rows] = _blend(img[rows], colour, alpha * m)
    img = np.clip(domain.noise(rng, img, shift.noise), 0.0, 1.0, out=img)
    if shift.gamma != 1.0:
        img **= shift.gamma
    img *= fov[..., None] * np.asarray(shift.gain[: domain.channels], _F32) * 255.0
    return (np.minimum(img, 255.0, out=img) + 0.5).astype(np.uint8), geom
