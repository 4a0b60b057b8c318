"""Deterministic synthetic chest CT in the Medical Segmentation Decathlon Task06_Lung layout.

A case is a torso in Hounsfield units with the slice axis last: an abdomen (liver, spleen,
stomach, kidneys, no lung) in the first ``abdomen_slices`` slices, then a thorax whose two
lungs hold one to three lobulated soft-tissue tumours, the only labelled voxels. Voxel axes
point to patient left, posterior and superior (LPS voxel order in a RAS+ world affine).

That is the ``easy`` preset (the quickstart's). The ``hard`` preset
(:mod:`lungseg.data.synth_hard`) varies anatomy, spacing and acquisition from scan to scan and
draws small nodules, masses on the chest wall or on vessels, spiculated margins, several lesions
in a scan, or none.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from lungseg.core.recipe_schema import build
from lungseg.core.recipe_sections import SyntheticConfig

AIR, FAT, MUSCLE, LUNG, VESSEL = -1000, -95, 45, -850, -40
LIVER, SPLEEN, RIB, CORTEX = 60, 48, 650, 900

_DEFAULT = SyntheticConfig()  # the one home of the defaults: a recipe's data.synthetic


def _checked(**params: object) -> SyntheticConfig:
    """The parameters, checked (types and ranges) as a recipe's ``data.synthetic`` is.

    Raises:
        RecipeError: naming the first bad parameter.
    """
    return build(SyntheticConfig, params, "")


def paint(vol: np.ndarray, mask: np.ndarray, value: float | np.ndarray) -> None:
    """Sets ``vol`` to ``value`` where ``mask`` holds (both broadcast to ``vol``)."""
    np.copyto(vol, value, where=mask)


def _smooth(rng: np.random.Generator, shape: tuple[int, ...], cells: tuple[int, ...]) -> np.ndarray:
    """Unit-variance smooth random field: a Gaussian grid of ``cells`` interpolated by kernels."""
    mats = []
    for n, c in zip(shape, cells, strict=True):
        x, p = (np.arange(n) + 0.5) / n, (np.arange(-1, c + 1) + 0.5) / c
        mats.append(np.exp(-0.5 * ((x[:, None] - p[None, :]) * c) ** 2).astype(np.float32))
    grid = rng.standard_normal(tuple(c + 2 for c in cells), dtype=np.float32)
    field = np.einsum("ia,jb,kc,abc->ijk", *mats, grid, optimize=True)
    return field / (field[::3, ::3, ::3].std() + 1e-6)


def _blob(rng: np.random.Generator, r: float, zs: float) -> np.ndarray:
    """Draws a lobulated tumour (perturbed union of spheres, main radius ``r``) in a box.

    Returns:
        Normalised distance: < 1 inside the tumour, < 1 + m / r within about m voxels of it.
    """
    lobes = int(rng.integers(2, 5))
    offs = rng.normal(size=(lobes, 3))
    offs *= r * rng.uniform(0.3, 0.7, (lobes, 1)) / np.linalg.norm(offs, axis=1, keepdims=True)
    offs[0] = 0
    radii = r * np.r_[1.0, rng.uniform(0.45, 0.75, lobes - 1)]
    h, hz = int(np.ceil(2.2 * r + 2)), int(np.ceil((2.2 * r + 2) * zs))
    x, z = np.arange(-h, h + 1, dtype=np.float32), np.arange(-hz, hz + 1, dtype=np.float32) / zs
    pts = (x[:, None, None], x[None, :, None], z[None, None, :])
    d = np.min([sum((q - o) ** 2 for q, o in zip(pts, off, strict=True)) / rr**2
                for off, rr in zip(offs, radii, strict=True)], axis=0)  # fmt: skip
    waves = rng.normal(size=(3, 3)) * 1.6 / r
    bump = sum(0.1 * np.cos(sum(w * q for w, q in zip(wv, pts, strict=True)) + rng.uniform(0, 6.3))
               for wv in waves)  # fmt: skip
    return np.sqrt(d) / (1 + bump)


def _tumours(rng: np.random.Generator, lung: np.ndarray, scale: float, zs: float) -> np.ndarray:
    """Places 1 to 3 tumours inside ``lung`` with >= 1.5 voxels of lung around each; 0 elsewhere."""
    mask = np.zeros(lung.shape, np.uint8)
    for index in range(1, int(rng.integers(1, 4)) + 1):
        r = max(1.5, rng.uniform(3.5, 6.5) * scale)
        for _attempt in range(6):
            dist = _blob(rng, r, zs)
            box = ndimage.find_objects((dist < 1 + 1.5 / r).astype(np.uint8))[0]
            blob, grown, h = dist[box] < 1, dist[box] < 1 + 1.5 / r, np.array(dist[box].shape)
            c = rng.integers(0, lung.shape, size=(256, 3))
            c = c[lung[c[:, 0], c[:, 1], c[:, 2]]] - h // 2
            for lo in c[((c >= 0) & (c + h <= lung.shape)).all(1)][:48]:
                box = tuple(slice(a, a + b) for a, b in zip(lo, h, strict=True))
                if (grown <= lung[box]).all() and not (grown & (mask[box] > 0)).any():
                    mask[box][blob] = index
                    break
            else:
                r = max(1.0, 0.8 * r)
                continue
            break
    if not mask.any():  # tiny volumes: one voxel at the deepest lung point
        mask[np.unravel_index(ndimage.distance_transform_edt(lung).argmax(), lung.shape)] = 1
    return mask


def make_case(
    seed: int,
    size: int = _DEFAULT.size,
    slices: int = _DEFAULT.slices,
    abdomen_slices: int = _DEFAULT.abdomen_slices,
    preset: str = _DEFAULT.preset,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Generates one synthetic chest CT scan and its tumour mask.

    Args:
        seed: Non-negative seed; the same arguments always give identical arrays.
        size: In-plane matrix size (voxels); the field of view stays ~360-460 mm (``easy``)
            or 307-512 mm (``hard``).
        slices: Number of axial slices (slice axis last, inferior first).
        abdomen_slices: Lowest slices holding abdomen only (no lung, no tumour).
        preset: ``easy`` (one to three lobulated tumours well inside the lungs of a torso of
            fixed proportions) or ``hard`` (:mod:`lungseg.data.synth_hard`: varied anatomy,
            spacing and acquisition; zero to five lesions of 5-70 mm, some on the chest wall
            or a vessel, some spiculated).

    Returns:
        ``(image, label, affine)``: int16 Hounsfield units of shape ``(size, size, slices)``,
        uint8 tumour mask in {0, 1} of the same shape, and the float64 4x4 voxel-to-RAS affine.

    Raises:
        RecipeError: An argument is not a whole number in its range; the message names it.
    """
    _checked(seed=seed, size=size, slices=slices, abdomen_slices=abdomen_slices, preset=preset)
    if preset == "hard":
        from lungseg.data.synth_hard import hard_case

        case = hard_case(seed, size, slices, abdomen_slices)
        return case.image, case.label, case.affine
    abd = abdomen_slices
    rng, shape, n_th = np.random.default_rng(seed), (size, size, slices), slices - abd
    ax = (np.arange(size, dtype=np.float32) - (size - 1) / 2) / (size / 2)
    u, v = ax[:, None], ax[None, :]  # u > 0: patient left, v > 0: posterior
    t = ((np.arange(n_th) + 0.5) / n_th).astype(np.float32)  # 0 at the diaphragm, 1 at the apex
    za = ((np.arange(abd) + 0.5) / max(abd, 1)).astype(np.float32)  # 1 just below the diaphragm
    bw, bd = 0.88 * rng.uniform(0.94, 1.03), 0.62 * rng.uniform(0.92, 1.05)
    rho = np.hypot(u / bw, (v - 0.02) / bd)
    cavity, tex = rho < 0.78, _smooth(rng, shape, (12, 12, max(3, round(20 * slices / size))))
    img = np.full(shape, AIR, np.float32)
    img[(np.abs(v - bd - 0.07) < 0.012) & (np.abs(u) < 0.8)] = 100  # patient table
    img[rho < 1], img[rho < 0.9] = FAT, MUSCLE

    def ell(cu: float, cv: float, au: float, av: float) -> np.ndarray:
        return np.hypot((u - cu) / au, (v - cv) / av)

    ab, th = img[:, :, :abd], img[:, :, abd:]
    # Abdomen: soft tissue with fat pockets, liver, spleen, stomach with a gas bubble, kidneys.
    paint(ab, cavity[..., None], np.where(tex[:, :, :abd] > 0.8, FAT, 35 + 8 * tex[:, :, :abd]))
    paint(ab, cavity[..., None] & (ell(-0.3, 0, 0.45, 0.5)[..., None] < 0.3 + 0.75 * za), LIVER)
    paint(ab, ell(0.5, 0.22, 0.16, 0.2)[..., None] < 1.6 * (za - 0.4), SPLEEN)
    stomach = ell(0.3, -0.2, 0.2, 0.15)[..., None] < 1.4 * (za - 0.3)
    paint(ab, stomach, np.where(v[..., None] < -0.27, AIR, 25))
    paint(ab, ell(0.32, 0.3, 0.1, 0.14)[..., None] < 1 - 2.2 * np.abs(za - 0.35), 30)
    paint(ab, ell(-0.32, 0.3, 0.1, 0.14)[..., None] < 1 - 2.2 * np.abs(za - 0.3), 30)
    paint(img, ell(0.08, 0.26, 0.055, 0.055)[..., None] < 1, 45)  # aorta
    # Thorax: mediastinal fat, heart, oesophagus, trachea, lungs with irregular borders.
    th[cavity] = FAT + 15
    heart = ell(0.1, -0.12, 0.3, 0.26)[..., None] ** 2 + ((t - 0.2) / 0.38) ** 2 < 1
    paint(th, heart, 40)
    paint(th, ell(0.03, 0.24, 0.035, 0.035)[..., None] < 1, 40)
    trachea = ell(0, 0.1, 0.06, 0.06)[..., None]
    paint(th, (trachea < 1) & (t > 0.55), np.where(trachea < 0.75, AIR, 40))
    lung = np.zeros((size, size, n_th), bool)
    for side, dome in ((-1, 0.16), (1, 0.1)):
        cu = side * 0.4 * bw / 0.88
        rl, theta = ell(cu, 0, 0.36 * bw / 0.88, 0.5 * bd / 0.62), np.arctan2(v, u - cu)
        k, phase = np.arange(1, 5), rng.uniform(0, 6.3, 4)
        amp, omega = rng.uniform(0.01, 0.04, 4), rng.uniform(2, 7, 4)
        a = np.concatenate([amp * np.cos(k * theta[..., None] + phase),
                            amp * np.sin(k * theta[..., None] + phase)], -1)  # fmt: skip
        b = np.concatenate([np.cos(np.outer(omega, t)), -np.sin(np.outer(omega, t))])
        edge = (a.reshape(-1, 8).astype(np.float32) @ b.astype(np.float32)).reshape(lung.shape)
        edge = (edge + 1) * np.sqrt(np.clip(1 - ((t - 0.3) / 0.75) ** 2, 0, 1))  # apex narrows
        base = dome * n_th * np.clip(1 - rl**2, 0, 1)[..., None]
        lung |= (rl[..., None] < edge) & (t * n_th >= base)
        paint(th, cavity[..., None] & (rl[..., None] < 1) & (t * n_th < base), LIVER - 5 * side)
    lung &= (cavity & (np.abs(u - 0.02) > 0.11) & (ell(0, 0.42, 0.2, 0.2) > 1))[..., None] & ~heart
    paint(th, lung, LUNG + 25 * tex[:, :, abd:] + 40 * v[..., None])
    cz = max(3, round(30 * slices / size))
    vessel = lung & (np.abs(_smooth(rng, lung.shape, (22, 22, cz))) < 0.22)
    vessel &= np.abs(_smooth(rng, lung.shape, (22, 22, cz))) < 0.22
    paint(th, vessel, VESSEL)
    # Bones: spine with discs, spinal canal and arch; ribs (oblique) and sternum.
    disc = (np.arange(slices) / max(3.0, n_th / 7) + rng.uniform()) % 1 < 0.2
    body = ell(0, 0.36, 0.09, 0.09)
    bi, bj = np.nonzero(body < 1)
    img[bi, bj] = np.where(disc, 80, np.where(body[bi, bj, None] > 0.8, CORTEX, 450))
    arch = ell(0, 0.5, 0.07, 0.07) < 1
    img[arch | ((np.abs(u) < 0.02) & (v > 0.5) & (v < 0.6))] = CORTEX - 100
    img[ell(0, 0.5, 0.04, 0.04) < 1] = 15
    paint(th, (ell(0, -0.82 * bd, 0.09, 0.03) < 1)[..., None], RIB)
    ri, rj = np.nonzero((rho > 0.8) & (rho < 0.86) & ((np.abs(u) > 0.15) | (v > 0)))
    phi = np.arctan2(np.abs(u), v)[ri, rj] / np.pi  # 0 posterior, 1 anterior
    k0 = abd // 2
    rib = np.cos(2 * np.pi * (np.arange(k0, slices) / max(3.0, n_th / 8) + 6 * phi[:, None]))
    img[ri, rj, k0:] = np.where(rib > 0.4, RIB, img[ri, rj, k0:])
    # Tumours, 1 to 3, each a lobulated blob kept inside lung with a margin of lung around it.
    spacing = rng.uniform(0.68, 0.9) * 512 / size, rng.uniform(1.5, 2.5)
    zs = float(np.clip(spacing[0] / spacing[1], 0.6, 1.5))
    mask = _tumours(rng, lung, size / 64, zs)
    paint(th, mask > 0, rng.uniform(20, 55, 4).astype(np.float32)[mask] + 6 * tex[:, :, abd:])
    img += rng.standard_normal(shape, dtype=np.float32) * rng.uniform(10, 20)
    label = np.zeros(shape, np.uint8)
    label[:, :, abd:] = mask > 0
    sx, sz = round(spacing[0], 4), round(spacing[1], 3)
    origin = [sx * (size - 1) / 2, sx * (size - 1) / 2 + 20, -round(rng.uniform(150, 350), 1)]
    affine = np.diag([-sx, -sx, sz, 1.0])
    affine[:3, 3] = origin
    return np.rint(np.clip(img, -1024, 3071)).astype(np.int16), label, affine


# The dataset writer lives in its own module; it stays importable from here.
from lungseg.data.synth_dataset import write_dataset as write_dataset  # noqa: E402
