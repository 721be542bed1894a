"""``image`` — sequential image classification of Fashion-MNIST (the offline LRA-Image analog).

LRA Image is grayscale CIFAR-10 flattened to 1,024 pixel tokens; CIFAR does not install offline,
so this task uses Fashion-MNIST (Xiao et al. 2017: 70,000 28x28 grayscale images of clothing, 10
balanced classes; MIT licence), zero-padded (centred) to 32x32 so the length is the same 1,024.
Each pixel intensity 0..255 is a token (vocabulary 256), read in raster order; no mask (every
image has the full length; the padding is black border, part of the image as LRA's is).

Data: the idx files of the Debian package ``dataset-fashion-mnist``
(``/usr/share/datasets/fashion-mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz``) or a
directory given as ``data_dir`` holding the same four files (gzipped or not). The 60,000 training
images are split by a seeded permutation into ``n_val`` validation images and up to ``n_train``
training images; the test split is the first ``n_test`` images of the official 10,000 test set.

Settings: ``downsample`` (1, 2 or 4: average-pool the 28x28 image first), ``side`` (padded side;
length = side^2), ``permute`` (a fixed seeded pixel permutation, the psMNIST-style variant).

Presets:

* ``quick`` — 2x downsampled (14x14) padded to 16x16 = 256 tokens, 10,000 / 1,000 / 2,000
  images; a small model reaches well above the 10 % chance level in a few minutes on 2 cores.
* ``lra`` — 32x32 = 1,024 tokens, 55,000 / 5,000 / 10,000 (LRA Image: 45,000 / 5,000 / 10,000).
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

from .base import Task, TaskMeta, register_task, resolve_preset
from .cache import CompactSplit, cached, source_fingerprint

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
DEBIAN_PACKAGE = "dataset-fashion-mnist"
FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")

PRESETS = {
    "quick": dict(downsample=2, side=16, n_train=10_000, n_val=1_000, n_test=2_000, permute=False, data_dir=None),
    "lra": dict(downsample=1, side=32, n_train=55_000, n_val=5_000, n_test=10_000, permute=False, data_dir=None),
}
MODEL_DEFAULTS = {
    "quick": dict(d_model=64, n_layers=2, num_heads=2, pooling="mean"),
    "lra": dict(d_model=128, n_layers=4, num_heads=4, pooling="mean"),  # S4 uses 6 x 512, LN
}
TRAIN_DEFAULTS = {
    "quick": dict(steps=600, batch_size=32, lr=3e-3, warmup=50, weight_decay=0.05),
    "lra": dict(steps=50_000, batch_size=50, lr=1e-3, warmup=1000, weight_decay=0.05),
}


def find_files(data_dir: str | os.PathLike | None = None) -> dict[str, Path]:
    """The four idx files (``.gz`` or plain) in ``data_dir`` or the Debian location."""
    d = Path(data_dir).expanduser() if data_dir is not None else DEBIAN_DIR
    out, missing = {}, []
    for key, stem in FILES.items():
        for cand in (d / f"{stem}.gz", d / stem):
            if cand.is_file():
                out[key] = cand
                break
        else:
            missing.append(f"{stem}.gz")
    if missing:
        hint = (
            f"install the Debian package {DEBIAN_PACKAGE!r} (apt-get install -y {DEBIAN_PACKAGE}, or "
            f"scripts/install_data.sh), or set data_dir=DIR"
            if data_dir is None
            else f"set data_dir to a directory holding {', '.join(s + '.gz' for s in FILES.values())}"
        )
        raise FileNotFoundError(f"image: Fashion-MNIST file(s) {', '.join(missing)} not found in {str(d)!r}: {hint}")
    return out


def read_idx(path: Path) -> np.ndarray:
    """An idx file (LeCun's MNIST format; magic 2049 = labels, 2051 = images) as a uint8 array."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 8 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError(f"{path}: not a uint8 idx file")
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise ValueError(f"{path}: header says {shape} but holds {data.size} bytes")
    return data.reshape(shape)


def to_sequences(images: np.ndarray, downsample: int, side: int, perm: np.ndarray | None) -> np.ndarray:
    """``[N, H, W]`` uint8 -> ``[N, side*side]`` uint8: average-pool by ``downsample``, pad (centred)."""
    n, h, w = images.shape
    if downsample > 1:
        h, w = h // downsample, w // downsample
        x = images[:, : h * downsample, : w * downsample].reshape(n, h, downsample, w, downsample)
        images = np.rint(x.mean(axis=(2, 4))).astype(np.uint8)
    if side < max(h, w):
        raise ValueError(f"image: side={side} is smaller than the {h}x{w} image")
    top, left = (side - h) // 2, (side - w) // 2
    out = np.zeros((n, side, side), dtype=np.uint8)
    out[:, top : top + h, left : left + w] = images
    out = out.reshape(n, side * side)
    return out if perm is None else out[:, perm]


def image_arrays(files: dict[str, Path], cfg: dict, seed: int) -> dict[str, np.ndarray]:
    tr_x, tr_y = read_idx(files["train_images"]), read_idx(files["train_labels"])
    te_x, te_y = read_idx(files["test_images"]), read_idx(files["test_labels"])
    if len(tr_x) != len(tr_y) or len(te_x) != len(te_y):
        raise ValueError("image: images and labels disagree in count")
    n_val, n_train, n_test = int(cfg["n_val"]), int(cfg["n_train"]), int(cfg["n_test"])
    if n_val + n_train > len(tr_x) or n_test > len(te_x) or min(n_val, n_train, n_test) < 1:
        raise ValueError(
            f"image: n_train + n_val must be <= {len(tr_x)} and n_test <= {len(te_x)} (all >= 1), "
            f"got {n_train} + {n_val}, {n_test}"
        )
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x696D6167]))
    order = rng.permutation(len(tr_x))
    val_idx, train_idx = order[:n_val], order[n_val : n_val + n_train]
    side = int(cfg["side"])
    perm = rng.permutation(side * side) if cfg["permute"] else None
    seq = lambda x: to_sequences(x, int(cfg["downsample"]), side, perm)  # noqa: E731
    return {
        "train_inputs": seq(tr_x[train_idx]),
        "train_targets": tr_y[train_idx].astype(np.int64),
        "validation_inputs": seq(tr_x[val_idx]),
        "validation_targets": tr_y[val_idx].astype(np.int64),
        "test_inputs": seq(te_x[:n_test]),
        "test_targets": te_y[:n_test].astype(np.int64),
    }


@register_task("image")
def build_image(preset: str = "quick", seed: int = 0, **overrides) -> Task:
    cfg = resolve_preset("image", PRESETS, preset, overrides)
    if int(cfg["downsample"]) not in (1, 2, 4):
        raise ValueError(f"image: downsample must be 1, 2 or 4, got {cfg['downsample']!r}")
    files = find_files(cfg["data_dir"])
    data_fp = source_fingerprint(*files.values())  # sha256 over the four idx files
    key = dict(cfg, data_dir=str(Path(files["train_images"]).parent.resolve()))
    arrays = cached(
        "image",
        preset,
        seed,
        key,
        lambda: image_arrays(files, cfg, seed),
        source=source_fingerprint(__file__) + data_fp,
    )
    splits = {s: CompactSplit.from_arrays(arrays, s) for s in ("train", "validation", "test")}
    L = int(cfg["side"]) ** 2
    counts = {s: np.bincount(np.asarray(arrays[f"{s}_targets"]), minlength=10).tolist() for s in splits}
    meta = TaskMeta(
        "image",
        "classification",
        256,
        L,
        num_classes=10,
        preset=preset,
        seed=seed,
        description=f"sequential Fashion-MNIST, {int(cfg['side'])}x{int(cfg['side'])} pixel tokens",
        extra={"config": cfg, "source_fingerprint": data_fp, "classes": list(CLASSES), "class_counts": counts},
    )
    return Task(
        meta,
        splits["train"],
        splits["validation"],
        splits["test"],
        dict(MODEL_DEFAULTS.get(preset, MODEL_DEFAULTS["lra"])),
        dict(TRAIN_DEFAULTS.get(preset, TRAIN_DEFAULTS["lra"])),
    )
