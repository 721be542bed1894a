"""Pathfinder and Path-X (Linsley et al. 2018; LRA, Tay et al. 2021): are two markers on one path?

Our own numpy-only generator following the "hard" setting of ``drewlinsley/pathfinder``
(``snakes2.py``; contour length 14) with the per-resolution parameters of the LRA TFDS builder
(see the table in ``PARAMS``). An image holds two target "snakes" and several distractor snakes.
A snake is a chain of short straight paddles (``paddle_length`` px long, ``paddle_thickness``
thick) separated by gaps of ``margin`` px: pivot ``c[i+1] = c[i] + (length + margin) u[i]`` and
paddle ``i`` runs from ``c[i] + margin/2 u[i]`` to ``c[i+1] - margin/2 u[i]``. The first direction
is uniform; each next direction turns by ``Δθ`` drawn from ``ANGLES`` candidate turns with weight
``cos²(min(|Δθ| continuity, π/2))`` (the continuity prior of snakes2), among the candidates whose
paddle stays inside the padded image and off blocked pixels. The two target snakes start
``seed_distance`` px apart; distractors have ``contour_length // 3`` paddles, start in a random free
pixel, and there are ``distractor_total // (contour_length // 3)`` of them. The label is a fair coin. Label 1: disc markers (radius
``marker_radius``) on both tips of target snake A; label 0: one on A's far tip and one on B's far
tip (both are "far" tips, so marker distance alone does not give the label away).

Rendering: paddles and discs are rasterised by supersampling (``antialias``² samples per pixel;
a sample is inside a paddle when within half the thickness, at least ``0.75 / antialias``, of the
segment), and a pixel's value is ``255 * min(1, coverage * snake_contrast * paddle_contrast)``
(markers: ``255 * coverage``), combined across paddles with ``max``. Inputs are the 8-bit pixels in
raster order (256-way tokens; ``res²`` tokens, 1,024 for Pathfinder-32, 16,384 for Path-X).

Guarantee (checked by the tests with an independent flood fill): the pixels of one snake, markers
included, form one component when pixels within Chebyshev distance ``gap = floor(max margin) + 1``
count as neighbours (consecutive paddles' end points are at most ``margin`` apart and the pixel of
every point of a paddle is lit), while pixels of different snakes are always more than ``gap``
apart (each finished snake blocks its pixels dilated by ``gap``). So the markers are
``gap``-connected iff the label is 1.

Decisions (the original is not reproducible bit-for-bit and uses PIL/scipy/cv2): directions are
quantised to ``ANGLES`` = 48 headings and paddle starts and marker centres to a 1/4-pixel grid so paddle stamps can be
memoised; a paddle that finds no free heading makes the snake retry (up to 20 times) and then the
whole image restart; a distractor that cannot be placed after 5 tries is dropped; no
single-paddle clutter (``use_single_paddles=False`` as in the LRA wrapper script). Images are
generated in chunks of 1,000, each with its own ``SeedSequence([seed, tag, chunk])``, so results
do not depend on ``workers`` (processes used for large builds).

Presets:
* ``pathfinder`` ``quick``: 32×32 (1,024 tokens), 10,000 / 500 / 1,000 images (generated once,
  then cached; generation time: benchmarks/notes/2026-12-08-pathfinder-generation.md). NOT learnable by attention in a CPU budget, and not
  claimed to be: Transformers are known to sit at chance on Pathfinder for a long time and often
  for good (google-research/long-range-arena issue #37: 3 of 5 BigBird runs never left loss 0.693;
  #60: a Transformer at 50% with the official configuration). Measured here with ``softmax`` and
  the ``patches`` front-end, batch 32, every run stayed at chance: 4×4 patches, 2 layers, d_model
  64, this preset, 2,000 steps; 2×2 patches, 4 layers, d_model 64, 50,000 images, 800 steps at
  contour length 14 and 2,000 steps at the "easy" contour length 6; 4×4 patches, 4 layers,
  d_model 128, 50,000 easy images, learned positions (1,500 steps) or DIET-REL biases at lr 5e-4
  (4,000 steps). The images do carry the label: ``scripts/pathfinder_cnn_check.py`` (a 5-layer
  CNN) reaches 89.8% validation at step 500 on contour length 6 and, after the same plateau,
  62.0% at step 1,750 on length 14;
  ``lra``: 160,000 / 20,000 / 20,000 (LRA's 80/10/10 split sizes of the 200K "hard" set).
* ``pathx`` ``quick``: 64×64 (4,096 tokens, the 64-px parameters), 2,000 / 200 / 200 — a smoke
  test, not expected to be learnable in minutes; ``lra``: 128×128 (16,384 tokens), 160,000 /
  20,000 / 20,000 (3.3 GB of uint8 pixels and hours of one-core generation: build it deliberately, with
  ``workers=``).
Both tasks accept the same settings, including ``resolution`` (32, 64, 128 or 256).
"""

from __future__ import annotations

import math
import os
from functools import lru_cache

import numpy as np

from .base import Task, TaskMeta, register_task, resolve_preset
from .cache import CompactSplit, cached, progress, source_fingerprint

_TAG = 0x70617468  # "path"
ANGLES = 48  # quantised headings
SUB = 4  # paddle ends and marker centres snap to a 1/SUB pixel grid
CHUNK = 1000

# LRA TFDS builder docstrings (/ snakes2_wrapper defaults), contour length 14 ("hard").
PARAMS = {
    32: dict(
        paddle_length=2.0,
        paddle_thickness=0.5,
        margins=(1.0,),
        marker_radius=1.5,
        seed_distance=7.0,
        padding=1,
        continuity=1.0,
        antialias=2,
        distractor_total=20,
        snake_contrast=2.0,
        paddle_contrast=0.75,
    ),
    64: dict(
        paddle_length=5.0,
        paddle_thickness=1.0,
        margins=(1.0,),
        marker_radius=2.5,
        seed_distance=12.0,
        padding=1,
        continuity=1.8,
        antialias=2,
        distractor_total=22,
        snake_contrast=0.8,
        paddle_contrast=1.0,
    ),
    128: dict(
        paddle_length=5.0,
        paddle_thickness=1.5,
        margins=(2.0, 3.0),
        marker_radius=3.0,
        seed_distance=20.0,
        padding=1,
        continuity=1.8,
        antialias=2,
        distractor_total=35,
        snake_contrast=0.9,
        paddle_contrast=1.0,
    ),
    256: dict(
        paddle_length=5.0,
        paddle_thickness=2.0,
        margins=(3.0,),
        marker_radius=5.0,
        seed_distance=27.0,
        padding=22,
        continuity=1.8,
        antialias=2,
        distractor_total=30,
        snake_contrast=1.0,
        paddle_contrast=1.0,
    ),
}

PRESETS = {
    "pathfinder": {
        "quick": dict(resolution=32, contour_length=14, n_train=10_000, n_val=500, n_test=1_000),
        "lra": dict(resolution=32, contour_length=14, n_train=160_000, n_val=20_000, n_test=20_000),
    },
    "pathx": {
        "quick": dict(resolution=64, contour_length=14, n_train=2_000, n_val=200, n_test=200),
        "lra": dict(resolution=128, contour_length=14, n_train=160_000, n_val=20_000, n_test=20_000),
    },
}
MODEL_DEFAULTS = {
    "quick": dict(d_model=64, n_layers=2, num_heads=4, pooling="mean", position="learned"),
    "lra": dict(d_model=256, n_layers=6, num_heads=4, pooling="mean", position="learned"),
}
TRAIN_DEFAULTS = {
    "pathfinder": {
        "quick": dict(steps=2000, batch_size=32, lr=1e-3, warmup=100, weight_decay=0.05),
        # S4 Table 11: batch 100 (Path-X 32), 200 (100) epochs; lr chosen for attention-style mixers.
        "lra": dict(steps=320_000, batch_size=100, lr=1e-3, warmup=5_000, weight_decay=0.05),
    },
    "pathx": {
        "quick": dict(steps=500, batch_size=16, lr=1e-3, warmup=50, weight_decay=0.05),
        "lra": dict(steps=500_000, batch_size=32, lr=5e-4, warmup=10_000, weight_decay=0.05),
    },
}


# --------------------------------------------------------------------------------------- rendering
def _coverage(pix: np.ndarray, aa: int, inside) -> np.ndarray:
    """Fraction of the ``aa × aa`` samples of each pixel (top-left corners ``pix [P, 2]``) for
    which ``inside(points [..., 2]) -> bool`` holds."""
    g = (np.arange(aa) + 0.5) / aa
    sub = np.stack(np.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)  # [aa², 2] (y, x)
    return inside(pix[:, None, :] + sub[None, :, :]).mean(1)  # [P]


def _stamp(bbox_lo, bbox_hi, aa: int, inside):
    """Pixels of the box with nonzero coverage: ``(dy [P], dx [P], coverage [P])``."""
    yy, xx = np.meshgrid(np.arange(bbox_lo[0], bbox_hi[0] + 1), np.arange(bbox_lo[1], bbox_hi[1] + 1), indexing="ij")
    pix = np.stack([yy.ravel(), xx.ravel()], -1).astype(float)
    cov = _coverage(pix, aa, inside)
    keep = cov > 0
    return yy.ravel()[keep], xx.ravel()[keep], cov[keep]


def _segment_stamp(a: np.ndarray, b: np.ndarray, half_width: float, aa: int):
    """A thick segment from ``a`` to ``b`` (pixel coordinates relative to pixel (0, 0))."""
    d = b - a

    def inside(q):  # distance to segment <= hw
        t = np.clip(((q - a) @ d) / (d @ d), 0, 1)
        return np.linalg.norm(q - (a + t[..., None] * d), axis=-1) <= half_width

    lo = np.floor(np.minimum(a, b) - half_width).astype(int)
    hi = np.floor(np.maximum(a, b) + half_width).astype(int)
    return _stamp(lo, hi, aa, inside)


@lru_cache(maxsize=None)
def _fan(fy: int, fx: int, length: float, margin: float, half_width: float, aa: int):
    """The paddles of all ``ANGLES`` headings from a pivot at ``(fy, fx) / SUB`` in pixel (0, 0):
    concatenated ``dy, dx, cov`` with ``starts [ANGLES]`` and ``counts [ANGLES]`` delimiting each
    heading's pixels (for a one-gather feasibility test of every heading)."""
    pivot = np.array([fy, fx]) / SUB
    parts = [
        _segment_stamp(pivot + margin / 2 * _unit(h), pivot + (margin / 2 + length) * _unit(h), half_width, aa)
        for h in range(ANGLES)
    ]
    counts = np.array([len(pt[0]) for pt in parts])
    dy, dx, cov = (np.concatenate(x) for x in zip(*parts))
    return dy, dx, cov, np.cumsum(counts) - counts, counts


@lru_cache(maxsize=None)
def _disc(fy: int, fx: int, radius: float, aa: int):
    """A disc marker centred at ``(fy, fx) / SUB`` in pixel (0, 0); its centre pixel is always lit."""
    c = np.array([fy, fx]) / SUB
    r = int(math.ceil(radius))
    dy, dx, cov = _stamp((-r, -r), (r, r), aa, lambda q: np.linalg.norm(q - c, axis=-1) <= radius)
    if not ((dy == 0) & (dx == 0)).any():
        dy, dx, cov = np.append(dy, 0), np.append(dx, 0), np.append(cov, 1.0 / aa**2)
    return dy, dx, cov


def _dilate(mask: np.ndarray, r: int) -> np.ndarray:
    """Chebyshev (square) dilation by ``r`` pixels."""
    out = mask.copy()
    for s in range(1, r + 1):
        out[s:, :] |= mask[:-s, :]
        out[:-s, :] |= mask[s:, :]
    rows = out.copy()
    for s in range(1, r + 1):
        out[:, s:] |= rows[:, :-s]
        out[:, :-s] |= rows[:, s:]
    return out


# --------------------------------------------------------------------------------------- growing
def _unit(heading: int) -> np.ndarray:
    theta = 2 * math.pi * heading / ANGLES
    return np.array([math.sin(theta), math.cos(theta)])  # (y, x)


def _snap(p) -> tuple[int, int, int, int]:
    """Point -> (pixel y, pixel x, sub y, sub x) on the 1/SUB grid."""
    qy, qx = round(float(p[0]) * SUB), round(float(p[1]) * SUB)
    return qy // SUB, qx // SUB, qy % SUB, qx % SUB


class _Canvas:
    """Image and occupancy in padded coordinates (``pad`` extra pixels on every side, marked
    blocked together with the image's own ``padding`` border, so no bounds checks are needed)."""

    def __init__(self, res: int, p: dict, margin: float, rng: np.random.Generator):
        self.res, self.p, self.margin, self.rng = res, p, margin, rng
        self.gap = int(math.floor(max(p["margins"]))) + 1
        self.hw = max(p["paddle_thickness"] / 2, 0.75 / p["antialias"])
        self.pad = int(math.ceil(p["paddle_length"] + max(p["margins"]) + self.hw + p["marker_radius"])) + 2
        size = res + 2 * self.pad
        self.blocked = np.ones((size, size), dtype=bool)  # other snakes' pixels dilated by gap
        inner = slice(self.pad + p["padding"], self.pad + res - p["padding"])
        self.blocked[inner, inner] = False
        self.image = np.zeros((size, size), dtype=np.float32)
        turn = np.minimum(np.arange(ANGLES), ANGLES - np.arange(ANGLES)) * 2 * math.pi / ANGLES
        self.turn_w = np.cos(np.minimum(turn * p["continuity"], math.pi / 2)) ** 2  # weight of each turn
        self.turn_w[self.turn_w < 1e-9] = 0.0
        self.turn_w = np.stack([np.roll(self.turn_w, h) for h in range(ANGLES)])  # [heading, next heading]

    def grow(self, start, n_paddles: int, tries: int = 20):
        """A snake of ``n_paddles`` from pivot ``start`` (image coordinates): ``(paddles, head,
        tail)`` or None after ``tries`` failures; ``paddles`` is a list of ``(ys, xs, cov)`` in
        padded coordinates, ``head``/``tail`` the outer end points of the first/last paddle."""
        L, m = self.p["paddle_length"], self.margin
        for _ in range(tries):
            pivot = np.asarray(start, dtype=float) + self.pad
            heading, paddles = None, []
            blocked = self.blocked.copy()  # + own paddles before the previous one
            for i in range(n_paddles):
                py, px, fy, fx = _snap(pivot)
                pivot = np.array([py + fy / SUB, px + fx / SUB])
                dy, dx, cov, starts, counts = _fan(fy, fx, L, m, self.hw, self.p["antialias"])
                bad = np.logical_or.reduceat(blocked[py + dy, px + dx], starts)  # [ANGLES]
                w = np.ones(ANGLES) if heading is None else self.turn_w[heading].copy()
                w[bad] = 0.0
                total = w.sum()
                if total <= 0:
                    break  # no free heading: retry the snake
                h = int(np.searchsorted(np.cumsum(w), self.rng.random() * total, side="right"))
                h = min(h, ANGLES - 1)
                sl = slice(starts[h], starts[h] + counts[h])
                if paddles:
                    blocked[paddles[-1][0], paddles[-1][1]] = True
                paddles.append((py + dy[sl], px + dx[sl], cov[sl]))
                if i == 0:
                    head = pivot + m / 2 * _unit(h) - self.pad
                heading, pivot = h, pivot + (L + m) * _unit(h)
            else:
                return paddles, head, pivot - m / 2 * _unit(heading) - self.pad
        return None

    def marker(self, point):
        py, px, fy, fx = _snap(np.asarray(point) + self.pad)
        dy, dx, cov = _disc(fy, fx, self.p["marker_radius"], self.p["antialias"])
        return py + dy, px + dx, cov

    def free(self, parts) -> bool:
        return not any(self.blocked[ys, xs].any() for ys, xs, _ in parts)

    def commit(self, parts, gain: float) -> None:
        """Draw ``parts`` (``(ys, xs, cov)``) with contrast ``gain`` and block them for later snakes."""
        mask = np.zeros_like(self.blocked)
        for ys, xs, cov in parts:
            np.maximum.at(self.image, (ys, xs), np.minimum(1.0, cov * gain).astype(np.float32))
            mask[ys, xs] = True
        self.blocked |= _dilate(mask, self.gap)

    def random_point(self, border: float):
        lo, hi = self.p["padding"] + border, self.res - self.p["padding"] - border
        return self.rng.uniform(lo, hi, size=2)

    def free_point(self):
        """A uniform point in a random unblocked pixel (image coordinates), or None."""
        free = np.flatnonzero(~self.blocked)
        if len(free) == 0:
            return None
        y, x = divmod(int(free[self.rng.integers(len(free))]), self.blocked.shape[1])
        return np.array([y, x]) + self.rng.random(2) - self.pad

    def pixels(self) -> np.ndarray:
        c = slice(self.pad, self.pad + self.res)
        return np.round(self.image[c, c] * 255).astype(np.uint8)


def _image(rng: np.random.Generator, res: int, contour_length: int, p: dict):
    """One image: ``(pixels uint8 [res, res], label, marker pixels int [2, 2] as (y, x))``."""
    n_distract = max(1, contour_length // 3)
    gain = p["snake_contrast"] * p["paddle_contrast"]
    border = p["marker_radius"] + 1
    while True:  # restart the image on failure
        label = int(rng.integers(2))
        canvas = _Canvas(res, p, float(rng.choice(p["margins"])), rng)
        start_a = canvas.random_point(border)
        a = canvas.grow(start_a, contour_length)
        if a is None:
            continue
        a_paddles, a_head, a_tail = a
        a_marks = [a_head, a_tail] if label == 1 else [a_tail]
        a_discs = [canvas.marker(m) for m in a_marks]
        if not canvas.free(a_discs):
            continue
        canvas.commit(a_paddles, gain)
        canvas.commit(a_discs, 1.0)
        b = None
        for _ in range(20):  # B starts seed_distance from A
            start_b = start_a + p["seed_distance"] * _unit(int(rng.integers(ANGLES)))
            if not (p["padding"] + border <= start_b.min() and start_b.max() < res - p["padding"] - border):
                continue
            b = canvas.grow(start_b, contour_length, tries=5)
            if b is None:
                continue
            b_discs = [canvas.marker(b[2])] if label == 0 else []
            if canvas.free(b_discs):
                break
            b = None
        if b is None:
            continue
        canvas.commit(b[0], gain)
        canvas.commit(b_discs, 1.0)
        for _ in range(p["distractor_total"] // n_distract):
            for _ in range(5):  # dropped after 5 failed tries
                start = canvas.free_point()
                d = None if start is None else canvas.grow(start, n_distract, tries=1)
                if d is not None:
                    canvas.commit(d[0], gain)
                    break
        marks = np.array([a_marks[0], a_tail if label == 1 else b[2]])
        return canvas.pixels(), label, np.floor(marks).astype(np.int64)


def _chunk(args):
    seed, index, n, res, contour_length = args
    rng = np.random.default_rng(np.random.SeedSequence([seed, _TAG, res, index]))
    p = PARAMS[res]
    images = np.empty((n, res * res), dtype=np.uint8)
    labels = np.empty(n, dtype=np.int64)
    marks = np.empty((n, 2, 2), dtype=np.int64)
    for i in range(n):
        img, labels[i], marks[i] = _image(rng, res, contour_length, p)
        images[i] = img.reshape(-1)
    return images, labels, marks


def generate(
    n: int,
    seed: int,
    *,
    resolution: int = 32,
    contour_length: int = 14,
    workers: int | None = None,
    show_progress: bool = True,
    stream: int = 0,
):
    """``n`` images in chunks of ``CHUNK``: ``(pixels uint8 [n, res²], labels int64 [n], markers
    int64 [n, 2, 2])``. ``stream`` selects an independent sequence of chunks (one per split).
    ``workers`` processes (default: ``$LONGSEQ_WORKERS`` or 1); the result does not depend on it."""
    if resolution not in PARAMS:
        raise ValueError(f"pathfinder: resolution must be one of {sorted(PARAMS)}, got {resolution}")
    if contour_length < 2:
        raise ValueError(f"pathfinder: contour_length must be >= 2, got {contour_length}")
    jobs = [
        (seed, stream * 1_000_000 + k, min(CHUNK, n - s), resolution, contour_length)
        for k, s in enumerate(range(0, n, CHUNK))
    ]
    workers = int(os.environ.get("LONGSEQ_WORKERS", "1")) if workers is None else workers
    bar = progress(total=n, desc=f"pathfinder-{resolution}", unit="img") if show_progress else None
    parts = []
    if workers > 1 and len(jobs) > 1:
        import multiprocessing as mp

        method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"  # children run numpy only
        with mp.get_context(method).Pool(workers) as pool:
            for out in pool.imap(_chunk, jobs):
                parts.append(out)
                bar is not None and bar.update(len(out[1]))
    else:
        for job in jobs:
            parts.append(_chunk(job))
            bar is not None and bar.update(job[2])
    if bar is not None:
        bar.close()
    if not parts:
        return (np.zeros((0, resolution**2), np.uint8), np.zeros(0, np.int64), np.zeros((0, 2, 2), np.int64))
    return tuple(np.concatenate(x) for x in zip(*parts))


# --------------------------------------------------------------------------------------- tasks
def _build(name: str, preset: str, seed: int, cache: bool | None, workers: int | None, overrides: dict) -> Task:
    cfg = resolve_preset(name, PRESETS[name], preset, overrides)
    for key in ("n_train", "n_val", "n_test"):
        if cfg[key] < 0:
            raise ValueError(f"{name}: {key} must be >= 0, got {cfg[key]}")
    res = cfg["resolution"]
    if res not in PARAMS:
        raise ValueError(f"{name}: resolution must be one of {sorted(PARAMS)}, got {res}")
    sizes = {"train": cfg["n_train"], "validation": cfg["n_val"], "test": cfg["n_test"]}
    total = sum(sizes.values())

    def build_arrays():
        out = {}
        for stream, (split, n) in enumerate(sizes.items()):
            pix, labels, marks = generate(
                n,
                seed,
                resolution=res,
                contour_length=cfg["contour_length"],
                workers=workers,
                show_progress=total > 2_000,
                stream=stream,
            )
            out.update({f"{split}_inputs": pix, f"{split}_targets": labels, f"{split}_markers": marks})
        return out

    use_cache = total > 2_000 if cache is None else bool(cache)
    arrays = cached(name, preset, seed, cfg, build_arrays, source=source_fingerprint(__file__), enabled=use_cache)
    splits = {k: CompactSplit.from_arrays(arrays, k) for k in sizes}
    meta = TaskMeta(
        name,
        "classification",
        256,
        res * res,
        num_classes=2,
        preset=preset,
        seed=seed,
        pad_id=0,
        description=f"Pathfinder {res}x{res}: are the two markers on one dashed path? (pixels in raster order)",
        extra={"config": cfg, "resolution": res, "gap": int(math.floor(max(PARAMS[res]["margins"]))) + 1},
    )
    key = preset if preset in MODEL_DEFAULTS else "quick"
    return Task(
        meta,
        splits["train"],
        splits["validation"],
        splits["test"],
        dict(MODEL_DEFAULTS[key]),
        dict(TRAIN_DEFAULTS[name][key]),
    )


@register_task("pathfinder")
def build_pathfinder(
    preset: str = "quick", seed: int = 0, cache: bool | None = None, workers: int | None = None, **overrides
) -> Task:
    """``build("pathfinder", preset="quick"|"lra", seed=0, resolution=32, ...)``; see the module docstring.
    ``cache=None`` caches on disk above 2,000 images; ``workers`` processes generate (default 1)."""
    return _build("pathfinder", preset, seed, cache, workers, overrides)


@register_task("pathx")
def build_pathx(
    preset: str = "quick", seed: int = 0, cache: bool | None = None, workers: int | None = None, **overrides
) -> Task:
    """Path-X: Pathfinder at 128×128 (``lra``); ``quick`` is 64×64. Same settings as ``pathfinder``."""
    return _build("pathx", preset, seed, cache, workers, overrides)
