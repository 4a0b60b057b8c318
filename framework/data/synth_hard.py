"""The ``hard`` synthetic preset: chest CT drawn in millimetres, with scan-to-scan variety.

Each scan draws its own geometry and acquisition: a body 280-400 mm wide (fat layer by
habitus), a field of view that fits it loosely (sometimes zoomed through the chest), pixels of
0.6-1.0 mm at a 512 matrix (so ``512 / size`` times that at ``size``), slice thickness 1-5 mm,
intravenous contrast or not, noise by dose and thickness, and a blur for the reconstruction
kernel. The anatomy is sized in millimetres: the abdomen below the diaphragm (liver, spleen,
stomach, kidneys, bowel), a thorax with domed diaphragm, heart and great vessels, spine, ribs,
trachea and main bronchi, and lungs of -850 HU with texture, a gravity gradient and a branching
vessel tree. A thin-slice scan therefore covers less of the chest than a thick-slice one of as
many slices (from the lung bases only, up to the neck above the apices).

About a fifth of the scans hold no tumour; the rest hold one to five lesions, nodules of
5-30 mm and masses of 30-70 mm, in the parenchyma, against the chest wall or on a vessel,
lobulated, irregular or spiculated (:mod:`lungseg.data.synth_lesions`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from lungseg.data.synth import AIR, CORTEX, FAT, LUNG, MUSCLE, RIB, _smooth, paint
from lungseg.data.synth_lesions import Lesion, capsules, place_lesions, vessel_tree

THICKNESSES = (1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 5.0)  # mm, as scanners reconstruct
SITES, SITE_P = ("parenchyma", "juxta-pleural", "vessel"), (0.45, 0.3, 0.25)


@dataclass(frozen=True)
class HardCase:
    """One ``hard`` scan with what was drawn in it (``lesions`` is empty for a normal scan)."""

    image: np.ndarray
    label: np.ndarray
    affine: np.ndarray
    lesions: tuple[Lesion, ...]
    zoomed: bool
    contrast: bool


def _plan(rng: np.random.Generator) -> list[tuple[str, float, bool]]:
    """The lesions to draw: none in a fifth of the scans, else 1-5 (site, diameter, spicules)."""
    if rng.random() < 0.2:
        return []
    plan = []
    for i in range(int(rng.choice([1, 2, 3, 4, 5], p=[0.55, 0.25, 0.12, 0.05, 0.03]))):
        mass = rng.random() < (0.45 if i == 0 else 0.1)
        d = rng.uniform(30, 70) if mass else float(np.exp(rng.uniform(np.log(5), np.log(30))))
        site = str(rng.choice(SITES, p=SITE_P))
        plan.append((site, float(d), bool(rng.random() < (0.5 if mass else 0.3))))
    return plan


def hard_case(seed: int, size: int, slices: int, abdomen_slices: int) -> HardCase:
    """Draws one ``hard`` scan (checked arguments: see :func:`lungseg.data.synth.make_case`)."""
    rng, abd = np.random.default_rng([seed, 2]), abdomen_slices
    shape = (size, size, slices)
    width = rng.uniform(280, 400)
    a, b, s = width / 2, width * rng.uniform(0.29, 0.37), width / 340
    zoomed = bool(width > 320 and rng.random() < 0.12)
    fov = width * (rng.uniform(0.7, 0.95) if zoomed else rng.uniform(1.08, 1.45))
    sx, sz = float(np.clip(fov, 307.2, 512) / size), float(rng.choice(THICKNESSES))
    cx, cy = rng.uniform(-0.03, 0.03) * fov, rng.uniform(-0.06, 0.03) * fov
    fat, muscle, height = rng.uniform(5, 30), rng.uniform(8, 15), rng.uniform(190, 270)
    contrast = bool(rng.random() < 0.55)
    blood = rng.uniform(150, 320) if contrast else rng.uniform(35, 50)
    liver = rng.uniform(95, 125) if contrast else rng.uniform(50, 65)
    axis = (np.arange(size) - (size - 1) / 2) * sx
    x, y = (axis - cx)[:, None], (axis - cy)[None, :]  # mm from the body centre; y: posterior
    h = ((np.arange(slices) - abd + 0.5) * sz).astype(np.float32)  # mm above the diaphragm
    tex = _smooth(rng, shape, (12, 12, max(3, round(slices * sz / 25))))
    img = np.full(shape, AIR, np.float32)

    def ell(ex: float, ey: float, rx: float, ry: float) -> np.ndarray:
        return np.hypot((x - ex * s) / (rx * s), (y - ey * s) / (ry * s))

    def rod(mask2d: np.ndarray, lo: float, hi: float) -> np.ndarray:
        return mask2d[..., None] & (h >= lo) & (h < hi)

    p = rng.uniform(2.0, 2.6)
    pad = int(np.ceil(max(0.0, width / 2 + abs(cx) + abs(cy) - size * sx / 2) / sx)) + 2
    big = (np.arange(-pad, size + pad) - (size - 1) / 2) * sx  # the body beyond a zoomed view
    body = (np.abs((big - cx) / a)[:, None] ** p + np.abs((big - cy) / b)[None, :] ** p) < 1
    depth = ndimage.distance_transform_edt(body, sampling=sx)[pad:-pad, pad:-pad]
    body = body[pad:-pad, pad:-pad]
    img[(np.abs(y - b - rng.uniform(5, 25) - 4) < 4) & (np.abs(x) < 0.45 * width)] = 100  # table
    yv = b - fat - 60 * s  # vertebral body centre
    spine = ell(0, yv / s, 30, 30) < 1
    cavity = (depth >= fat + muscle + 10) & ~spine & ~((np.abs(x) < 30 * s) & (y > yv))
    img[body] = FAT
    img[body & (depth >= fat)] = MUSCLE
    paint(img, cavity[..., None] & (h < 0), 35 + 8 * tex)  # abdomen: soft tissue
    paint(img, cavity[..., None] & (h < 0) & (tex > 0.9), FAT)
    _abdomen(img, rng, ell, h, tex, liver, s, y)
    # thorax: mediastinal fat, heart, great vessels, airway; then the lungs
    paint(img, cavity[..., None] & (h >= 0), np.where(h > height, MUSCLE, FAT + 10) + 10 * tex)
    heart = (ell(15, -25, 62, 50)[..., None] ** 2 + ((h - 55 * s) / (60 * s)) ** 2) < 1
    paint(img, heart & cavity[..., None], blood * 0.85)
    med = (np.abs(x - 3 * s) < 20 * s) | ((np.abs(x) < 12 * s) & (y < 0))
    organs = [((-12, -20, 15), 70 * s, 0.62 * height), ((18, -30, 14), 80 * s, 0.55 * height),
              ((22, yv / s - 20, 12), -1e9, 0.62 * height), ((-30, -10, 9), 60 * s, 0.7 * height),
              ((6, yv / s - 25, 7), 0, 1e9), ((0, yv / s - 45, 9), 0.5 * height, 1e9)]  # fmt: skip
    for i, ((ex, ey, r), lo, hi) in enumerate(organs):
        paint(img, rod(ell(ex, ey, r, r) < 1, lo, hi), (blood, blood, blood, blood, 40, 40)[i])
        med = med | (ell(ex, ey, r + 4, r + 4) < 1)
    paint(img, rod(ell(0, yv / s - 45, 7, 7) < 1, 0.5 * height, 1e9), AIR)  # trachea lumen
    lung = np.zeros(shape, bool)
    ac, bc = a - fat - muscle - 10, b - fat - muscle - 10
    frac = np.clip(h / height, -1, 2)
    apex = np.sqrt(np.clip(1 - ((frac - 0.3) / 0.75) ** 2, 0, 1))
    wobble = 1 + 0.04 * _smooth(rng, shape, (6, 6, max(3, round(slices * sz / 40))))
    for side, dome in ((-1, rng.uniform(18, 35)), (1, rng.uniform(10, 25))):
        rl = np.hypot((x - side * 0.48 * ac) / (0.62 * ac), (y - 0.05 * bc) / (1.05 * bc))
        base = dome * np.clip(1 - (rl * 1.15) ** 2, 0, 1)
        one = (rl[..., None] < apex * wobble) & (h >= base[..., None]) & (side * x > 0)[..., None]
        lung |= one & (cavity & ~med & ~spine)[..., None] & ~heart
        below = (cavity & (side * x > 0) & (rl < 1.1))[..., None] & (h >= 0) & (h < base[..., None])
        paint(img, below & ~heart, liver if side < 0 else 45)  # liver dome; spleen and stomach
    paint(img, lung, LUNG + rng.uniform(-40, 30) + 25 * tex + 35 * (y / b)[..., None])
    _ribs_and_spine(img, rng, x, y, h, depth, fat + muscle, yv, s, height)
    # vessels and bronchi, in the thorax only; then the lesions
    th = np.s_[:, :, abd:]
    sp = np.array([sx, sx, sz])
    grid = np.array([cx + (size - 1) / 2 * sx, cy + (size - 1) / 2 * sx, -0.5 * sz])
    carina = grid + np.array([0, yv - 45 * s, 0.5 * height])
    segs, airway = [], []
    for side in (-1, 1):
        hilum = grid + np.array([side * 40 * s, 5 * s, 0.45 * height])
        segs += vessel_tree(rng, hilum, side, s, lung[th], sp)
        airway.append((carina, hilum, 7 * s, 5 * s))
    occ = capsules(lung[th].shape, sp, segs) * (lung[th] | rod(med, 0, 1e9)[th])
    img[th] += (blood - img[th]) * occ
    air = capsules(lung[th].shape, sp, airway)
    img[th] += (AIR + 60 - img[th]) * air
    wall = body & ~cavity & ~spine
    labels, drawn = place_lesions(rng, _plan(rng), lung[th], wall, occ > 0.5, sp)
    lesions = []
    boxes = ndimage.find_objects(labels)
    for i, (site, diameter, spiculated, centre) in enumerate(drawn, start=1):
        box = tuple(slice(max(0, q.start - 1), q.stop + 1) for q in boxes[i - 1])
        one, sub, tx = labels[box] == i, img[th][box], tex[th][box]
        grown = ndimage.binary_dilation(one) & ~one
        sub[one] = rng.uniform(20, 50) + (rng.uniform(15, 35) if contrast else 0) + 8 * tx[one]
        if diameter >= 30:  # a mass: a necrotic core
            core = ndimage.distance_transform_edt(one, sampling=sp) > diameter / 4
            sub[core] = rng.uniform(10, 25) + 5 * tx[core]
        touch_wall = (grown & wall[box[:2]][..., None]).any()
        touch_vessel = (grown & (occ[box] > 0.5)).any()
        centre = (centre[0], centre[1], centre[2] + abd)
        lesions.append(Lesion(site, diameter, spiculated, int(one.sum()), centre,
                              bool(touch_wall), bool(touch_vessel)))  # fmt: skip
    img = ndimage.gaussian_filter(img, (*(rng.uniform(0.3, 0.7),) * 2, rng.uniform(0.2, 0.5)))
    noise = ndimage.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), 0.6)
    img += noise / noise.std() * rng.uniform(8, 28) * np.sqrt(2.5 / sz) + rng.uniform(-8, 8)
    if not zoomed and rng.random() < 0.35:  # outside the reconstruction circle
        img[np.hypot(axis[:, None], axis[None, :]) > size * sx / 2] = -1024
    label = np.zeros(shape, np.uint8)
    label[th] = labels > 0
    origin = [sx * (size - 1) / 2, sx * (size - 1) / 2 + 20, -round(rng.uniform(150, 350), 1)]
    affine = np.diag([-sx, -sx, sz, 1.0])
    affine[:3, 3] = origin
    image = np.rint(np.clip(img, -1024, 3071)).astype(np.int16)
    return HardCase(image, label, affine, tuple(lesions), zoomed, contrast)


def _abdomen(img, rng, ell, h, tex, liver, s, y) -> None:
    """Liver, spleen, stomach with gas, kidneys and bowel below the diaphragm (``h < 0``)."""
    d = -h  # mm below the diaphragm
    paint(img, (ell(-55, 5, 95, 80)[..., None] < 1 - d / (170 * s)) & (h < 0), liver)
    paint(img, (ell(-10, -40, 80, 35)[..., None] < 1 - d / (80 * s)) & (h < 0), liver)
    paint(img, (ell(80, 45, 30, 50)[..., None] < 1 - (d / (110 * s)) ** 2) & (h < 0), liver - 8)
    stomach = (ell(45, -35, 50, 40)[..., None] < 1 - d / (120 * s)) & (h < 0)
    paint(img, stomach, np.where((y < -55 * s)[..., None] & (d > 8), AIR, 25))  # gas under a wall
    for side in (-1, 1):
        kidney = ell(side * 65, 45, 28, 35)[..., None] < 1 - ((d - 110 * s) / (70 * s)) ** 2
        paint(img, kidney & (h < 0), liver + rng.uniform(20, 80))
    bowel = (ell(0, -10, 150, 100)[..., None] < 1) & (d > 100 * s) & (h < 0)
    paint(img, bowel & (tex > 1.7), AIR)


def _ribs_and_spine(img, rng, x, y, h, depth, inner, yv, s, height) -> None:
    """Oblique ribs around the chest and upper abdomen, the sternum, vertebrae with discs."""
    band = (depth >= inner) & (depth < inner + 9)
    phi = np.arctan2(np.abs(x), y) / np.pi  # 0 posterior, 1 anterior
    pitch = rng.uniform(22, 28) * s
    rib = np.cos(2 * np.pi * (h / pitch + 5 * phi[..., None] + rng.uniform())) > 0.4
    paint(img, band[..., None] & ((np.abs(x) > 20 * s) | (y > 0))[..., None] & rib
          & (h > -70) & (h < height), RIB)  # fmt: skip
    sternum = (np.abs(x) < 16 * s) & (y < 0) & band
    paint(img, sternum[..., None] & (h > 0.05 * height) & (h < 0.85 * height), 400)
    r = np.hypot(x, y - yv)
    disc = (h / (28 * s) + rng.uniform()) % 1 < 0.2
    paint(img, (r < 16 * s)[..., None], np.where(disc, 80, 250))
    paint(img, ((r > 13 * s) & (r < 16 * s))[..., None] & ~disc, CORTEX - 200)
    canal = np.hypot(x, y - yv - 25 * s)
    paint(img, ((canal < 12 * s) | ((np.abs(x) < 3 * s) & (y > yv) & (y < yv + 50 * s)))[..., None],
          CORTEX - 300)  # fmt: skip
    paint(img, (canal < 7 * s)[..., None], 15)


__all__ = ["HardCase", "hard_case"]
