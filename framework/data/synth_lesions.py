"""Tubes and tumours for the ``hard`` synthetic preset, drawn in millimetres on a voxel grid.

Everything here works on a thorax sub-volume ``(X, Y, Z)`` with voxel spacing ``sp`` (mm)
and points given in millimetres from voxel ``(0, 0, 0)``: the vessel tree (and the main
bronchi) as tapered capsules with partial-volume edges, and lesions of three kinds of site:
in the parenchyma, juxta-pleural (against the chest wall) and attached to a vessel, with
lobulated, irregular or spiculated margins.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

Segment = tuple[np.ndarray, np.ndarray, float, float]  # p0, p1 (mm), radius at p0, at p1
_CUBE = np.ones((3, 3, 3), bool)  # 26-connectivity: lesions keep a voxel apart


@dataclass(frozen=True)
class Lesion:
    """One drawn lesion (what :func:`lungseg.data.synth_hard.hard_case` reports).

    Attributes:
        site: ``parenchyma``, ``juxta-pleural`` or ``vessel``.
        diameter_mm: the nominal diameter it was drawn with (before clipping to the lung).
        spiculated: drawn with spicules.
        voxels: labelled voxels.
        centre: its centre voxel in the whole scan.
        touches_wall: a labelled voxel is next to the chest wall (outside the pleura).
        touches_vessel: a labelled voxel is next to a vessel.
    """

    site: str
    diameter_mm: float
    spiculated: bool
    voxels: int
    centre: tuple[int, int, int]
    touches_wall: bool
    touches_vessel: bool


def _axes(lo: np.ndarray, hi: np.ndarray, sp: np.ndarray) -> tuple[np.ndarray, ...]:
    """Open-mesh millimetre coordinates of voxels ``lo`` to ``hi - 1`` (spacing ``sp``)."""
    return np.ix_(
        *(np.arange(a, b, dtype=np.float32) * s for a, b, s in zip(lo, hi, sp, strict=True))
    )


def capsules(shape: tuple[int, ...], sp: np.ndarray, segments: list[Segment]) -> np.ndarray:
    """Partial-volume occupancy in [0, 1] of tapered capsules, drawn in their bounding boxes."""
    occ = np.zeros(shape, np.float32)
    h = float(sp[:2].mean())
    for p0, p1, r0, r1 in segments:
        pad = max(r0, r1) + h
        lo = np.maximum(np.floor((np.minimum(p0, p1) - pad) / sp).astype(int), 0)
        hi = np.minimum(np.ceil((np.maximum(p0, p1) + pad) / sp).astype(int) + 1, shape)
        if (hi <= lo).any():
            continue
        grids = _axes(lo, hi, sp)
        d = p1 - p0
        t = sum((g - q) * c for g, q, c in zip(grids, p0, d, strict=True)) / max(float(d @ d), 1e-6)
        t = np.clip(t, 0, 1)
        dist = np.sqrt(sum((g - q - c * t) ** 2 for g, q, c in zip(grids, p0, d, strict=True)))
        r = r0 + (r1 - r0) * t
        part = np.clip(0.5 + (r - dist) / h, 0, 1) * np.minimum(1, 2 * r / h)
        box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
        np.maximum(occ[box], part, out=occ[box])
    return occ


def _cross(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """The cross product of two 3-vectors (``np.cross`` costs ten times as much)."""
    x, y, z = p
    return np.array([y * q[2] - z * q[1], z * q[0] - x * q[2], x * q[1] - y * q[0]])


def _turn(rng: np.random.Generator, d: np.ndarray, degrees: float) -> np.ndarray:
    """``d`` turned by ``degrees`` about a random axis perpendicular to it (unit result)."""
    axis = _cross(d, rng.normal(size=3))
    axis /= np.linalg.norm(axis) + 1e-9
    a = np.radians(degrees)
    out = d * np.cos(a) + _cross(axis, d) * np.sin(a)
    return out / np.linalg.norm(out)


def vessel_tree(
    rng: np.random.Generator, hilum: np.ndarray, side: int, scale: float, lung: np.ndarray,
    sp: np.ndarray,
) -> list[Segment]:  # fmt: skip
    """Pulmonary vessels of one lung: trunks from ``hilum`` branching in two until ~0.5 mm.

    ``side`` is +1 for the left lung (voxel x grows to the patient's left), -1 for the right.
    A branch stops where it leaves ``lung``.
    """
    stack = []
    for _ in range(int(rng.integers(7, 11))):  # lobar and segmental trunks, fanning out
        d = np.array([side * rng.uniform(0.3, 1), rng.normal(0, 0.6), rng.normal(0, 0.8)])
        stack.append((hilum.copy(), d / np.linalg.norm(d), rng.uniform(3.5, 6) * scale, 0))
    segments: list[Segment] = []
    while stack:
        p0, d, r, level = stack.pop()
        p1 = p0 + d * max(4.0, r * rng.uniform(6, 10))
        segments.append((p0, p1, r, 0.85 * r))
        idx = np.round(p1 / sp).astype(int)
        inside = (idx >= 0).all() and (idx < lung.shape).all() and lung[tuple(idx)]
        if r * 0.75 >= 0.5 and (inside or level < 2):  # trunks start in the mediastinum
            for sign in (1, -1):
                turned = _turn(rng, d, sign * rng.uniform(15, 35))
                stack.append((p1, turned, r * rng.uniform(0.72, 0.85), level + 1))
    return segments


def lesion_shape(
    rng: np.random.Generator, r: float, sp: np.ndarray, spiculated: bool
) -> np.ndarray:
    """A lesion of main radius ``r`` mm centred in an odd-sized box of voxels of spacing ``sp``.

    A union of two to four spheres (lobulation), margins made irregular by a few waves, and
    for ``spiculated`` six to fourteen thin tapering spicules reaching 1.4-2.1 ``r`` out.
    """
    reach = r * (2.2 if spiculated else 1.5)
    half = np.ceil(reach / sp).astype(int) + 1
    grids = _axes(-half, half + 1, sp)
    lobes = int(rng.integers(2, 5))
    offs = rng.normal(size=(lobes, 3))
    offs *= r * rng.uniform(0.25, 0.6, (lobes, 1)) / np.linalg.norm(offs, axis=1, keepdims=True)
    offs[0] = 0
    radii = r * np.r_[1.0, rng.uniform(0.45, 0.8, lobes - 1)]
    d = np.min([sum((g - o) ** 2 for g, o in zip(grids, off, strict=True)) / rr**2
                for off, rr in zip(offs, radii, strict=True)], axis=0)  # fmt: skip
    amp = 0.18 if spiculated else rng.uniform(0.04, 0.12)
    waves = rng.normal(size=(4, 3)) * 2.5 / r
    bump = np.float32(0)
    for wv in waves:
        arg = sum(w * g for w, g in zip(wv, grids, strict=True))
        bump = bump + amp * np.cos(arg + rng.uniform(0, 6.3))
    shape = np.sqrt(d) < 1 + bump
    if spiculated:
        segs = []
        for _ in range(int(rng.integers(6, 15))):
            u = rng.normal(size=3)
            u /= np.linalg.norm(u)
            p0, p1 = u * 0.6 * r + half * sp, u * r * rng.uniform(1.4, 2.1) + half * sp
            segs.append((p0, p1, rng.uniform(0.6, 1.4), 0.25))
        shape |= capsules(shape.shape, sp, segs) > 0.5
    shape[tuple(half)] = True  # never empty: the centre voxel at least
    return shape


def place_lesions(
    rng: np.random.Generator,
    plan: list[tuple[str, float, bool]],
    lung: np.ndarray,
    wall: np.ndarray,
    vessel: np.ndarray,
    sp: np.ndarray,
) -> tuple[np.ndarray, list[tuple[str, float, bool, tuple[int, int, int]]]]:  # fmt: skip
    """Draws each ``(site, diameter_mm, spiculated)`` of ``plan`` into the lungs.

    ``lung`` and ``vessel`` are masks of the thorax volume, ``wall`` the chest wall in one
    slice (the same in every slice), ``sp`` the voxel spacing in mm.

    Parenchymal lesions keep a rim of lung, juxta-pleural ones are centred within 0.3-0.8 radii
    of the chest wall and may press into it by one voxel, vessel-attached ones sit a radius
    from a vessel. A lesion that does not fit is shrunk (down to 2 mm radius) and then drawn
    at the deepest free lung point. Lesions never touch each other.

    Returns:
        Labels (1, 2, ... per lesion; 0 elsewhere) and, per lesion, what was drawn and where.
    """
    labels = np.zeros(lung.shape, np.uint8)
    if not plan:
        return labels, []
    lung_d = ndimage.distance_transform_edt(lung, sampling=sp)
    wall_d = ndimage.distance_transform_edt(~wall, sampling=sp[:2])[..., None]
    near_wall = wall_d <= lung_d + 1.5 * sp.max()
    plane = ndimage.generate_binary_structure(3, 1)
    plane[:, :, (0, 2)] = False
    pleura = ndimage.binary_dilation(lung, plane) & wall[..., None]
    vessel_d = None
    if any(site == "vessel" for site, _, _ in plan):
        vessel_d = ndimage.distance_transform_edt(~vessel, sampling=sp)
    drawn = []
    for index, (site, diameter, spiculated) in enumerate(plan, start=1):
        free = lung & ~ndimage.binary_dilation(labels > 0, _CUBE)
        r = diameter / 2
        while True:
            if site == "juxta-pleural":
                ok = free & near_wall & (lung_d <= max(0.8 * r, 1.01 * sp.min()))
                ok &= lung_d >= min(0.3 * r, sp.min())
            elif vessel_d is not None and site == "vessel":
                ok = free & (lung_d >= 0.8 * r) & (np.abs(vessel_d - r) <= max(0.35 * r, sp[0]))
            else:
                ok = free & (lung_d >= r + 1.0)
            if ok.any() or r <= 2.0:
                break
            r = max(2.0, 0.8 * r)
        if ok.any():
            cands = np.argwhere(ok)
            centre = cands[rng.integers(len(cands))]
        elif free.any():
            centre = np.array(np.unravel_index(np.argmax(lung_d * free), lung.shape))
        else:
            continue
        shape = lesion_shape(rng, r, sp, spiculated)
        half = np.array(shape.shape) // 2
        lo, hi = centre - half, centre + half + 1
        clo, chi = np.maximum(lo, 0), np.minimum(hi, lung.shape)
        box = tuple(slice(a, b) for a, b in zip(clo, chi, strict=True))
        sub = shape[tuple(slice(a - x, b - x) for a, b, x in zip(clo, chi, lo, strict=True))]
        allowed = free | pleura if site == "juxta-pleural" else free
        allowed = allowed & ~ndimage.binary_dilation(labels > 0, _CUBE)
        sub = sub & allowed[box]
        sub[tuple(centre - clo)] = True
        parts, _ = ndimage.label(sub, np.ones((3, 3, 3), bool))
        sub = parts == parts[tuple(centre - clo)]  # one piece: clipping may cut off a spicule
        labels[box][sub] = index
        drawn.append((site, round(2 * r, 1), spiculated, tuple(int(c) for c in centre)))
    return labels, drawn


__all__ = ["Lesion", "capsules", "lesion_shape", "place_lesions", "vessel_tree"]
