"""Pathfinder generator: labels checked by an independent flood fill on the rendered pixels."""

import math
from collections import deque

import numpy as np
import pytest
import torch

import longseq.tasks as tasks
from longseq.tasks.pathfinder import PARAMS, generate


@pytest.fixture(autouse=True)
def _tmp_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LONGSEQ_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("LONGSEQ_PROGRESS", "0")


def reachable(img: np.ndarray, start, gap: int) -> np.ndarray:
    """Breadth-first flood fill over lit pixels; pixels within Chebyshev distance ``gap`` are neighbours."""
    lit = img > 0
    seen = np.zeros_like(lit)
    seen[start] = True
    queue = deque([start])
    H, W = img.shape
    while queue:
        y, x = queue.popleft()
        for yy in range(max(0, y - gap), min(H, y + gap + 1)):
            for xx in range(max(0, x - gap), min(W, x + gap + 1)):
                if lit[yy, xx] and not seen[yy, xx]:
                    seen[yy, xx] = True
                    queue.append((yy, xx))
    return seen


def components(img: np.ndarray, gap: int) -> int:
    left, n = img > 0, 0
    while left.any():
        start = tuple(int(v) for v in np.argwhere(left)[0])
        left = left & ~reachable(img, start, gap)
        n += 1
    return n


@pytest.mark.parametrize("res,n", [(32, 40), (128, 3)])
def test_labels_match_flood_fill(res, n):
    pixels, labels, markers = generate(n, 7, resolution=res, show_progress=False)
    gap = int(math.floor(max(PARAMS[res]["margins"]))) + 1
    assert pixels.shape == (n, res * res) and pixels.dtype == np.uint8
    assert set(np.unique(labels)) <= {0, 1}
    for img, y, (m0, m1) in zip(pixels, labels, markers):
        img = img.reshape(res, res)
        assert img[tuple(m0)] > 0 and img[tuple(m1)] > 0, "markers must be lit"
        connected = reachable(img, tuple(int(v) for v in m0), gap)[tuple(m1)]
        assert bool(connected) == bool(y)
        # two targets + distractors: several separate snakes
        assert components(img, gap) >= 3


def test_class_balance_and_density():
    _, labels, _ = generate(150, 0, resolution=32, show_progress=False)
    assert 0.38 < labels.mean() < 0.62
    pixels, _, _ = generate(10, 1, resolution=32, show_progress=False)
    assert 0.08 < (pixels > 0).mean() < 0.35


def test_task_determinism_and_splits():
    cfg = dict(n_train=12, n_val=4, n_test=4)
    a = tasks.build("pathfinder", preset="quick", seed=0, **cfg)
    b = tasks.build("pathfinder", preset="quick", seed=0, **cfg)
    c = tasks.build("pathfinder", preset="quick", seed=1, **cfg)
    assert a.meta.seq_len == 1024 and a.meta.vocab_size == 256 and a.meta.num_classes == 2
    for name in ("train", "validation", "test"):
        assert a.splits()[name].fingerprint() == b.splits()[name].fingerprint()
        assert a.splits()[name].fingerprint() != c.splits()[name].fingerprint()
    assert a.train.fingerprint() != a.test.fingerprint()  # splits are independent streams
    batch = a.train.batch(torch.tensor([0, 5]))
    assert batch["inputs"].dtype == torch.int64 and batch["inputs"].shape == (2, 1024)
    assert "mask" not in batch


def test_workers_do_not_change_data(monkeypatch):
    import longseq.tasks.pathfinder as pf

    monkeypatch.setattr(pf, "CHUNK", 2)  # 2 chunks: one per worker process
    a = generate(4, 3, resolution=32, workers=1, show_progress=False)
    b = generate(4, 3, resolution=32, workers=2, show_progress=False)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


def test_pathx_and_errors():
    t = tasks.build("pathx", preset="lra", n_train=1, n_val=1, n_test=1)
    assert t.meta.seq_len == 128 * 128 and t.meta.extra["resolution"] == 128
    assert tasks.build("pathx", preset="quick", n_train=1, n_val=1, n_test=1).meta.seq_len == 64 * 64
    with pytest.raises(ValueError, match="resolution"):
        tasks.build("pathfinder", resolution=48, n_train=1, n_val=1, n_test=1)
    with pytest.raises(ValueError, match="unknown setting"):
        tasks.build("pathfinder", paddle=3)
