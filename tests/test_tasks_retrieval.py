"""retrieval (same-module chunk pairs) on a tiny fake stdlib."""

import numpy as np
import pytest
import torch

from longseq.tasks import build
from longseq.tasks.lm import file_split
from longseq.tasks.retrieval import sample_pairs


@pytest.fixture(autouse=True)
def _data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("LONGSEQ_DATA", str(tmp_path / "cache"))


def make_stdlib(root, n_files=300, seed=0):
    """Each file repeats its own tag so a chunk's file can be recovered from its bytes."""
    rng = np.random.default_rng(seed)
    for i in range(n_files):
        path = root / f"pkg{i % 5}" / f"m{i:03d}.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes((b"#%03d " % i) * int(rng.integers(4, 40)))
    return root


def test_sample_pairs_balanced_and_correct():
    rng = np.random.default_rng(0)
    file_of = np.repeat(np.arange(20), np.arange(20) % 5 + 2)
    pairs, labels = sample_pairs(rng, file_of, 2001)
    assert labels.sum() == 1000
    same = file_of[pairs[:, 0]] == file_of[pairs[:, 1]]
    assert np.array_equal(same, labels == 1)
    assert (pairs[:, 0] != pairs[:, 1]).all()


def test_retrieval_fixture(tmp_path):
    root = make_stdlib(tmp_path / "lib")
    cfg = dict(root=str(root), seq_len=20, n_train=400, n_val=40, n_test=60)
    t = build("retrieval", preset="quick", seed=0, **cfg)
    assert t.meta.extra["pair"] is True and t.meta.num_classes == 2 and t.meta.seq_len == 20
    assert [len(s) for s in t.splits().values()] == [400, 40, 60]
    for name, s in t.splits().items():
        b = s.batch(torch.arange(len(s)))
        assert b["inputs"].shape == (len(s), 2, 20) and b["inputs"].dtype == torch.int64
        assert b["mask"].shape == (len(s), 2, 20) and b["mask"].all()
        assert b["targets"].float().mean() == 0.5
        # recover each chunk's file from its bytes: label == same file; files belong to this split
        tags = b["inputs"].numpy().astype(np.uint8)

        def file_of(chunk):
            text = bytes(chunk).decode()
            k = text.index("#")
            return int(text[k + 1 : k + 4])

        fa = np.array([file_of(c) for c in tags[:, 0]])
        fb = np.array([file_of(c) for c in tags[:, 1]])
        assert np.array_equal(fa == fb, b["targets"].numpy() == 1)
        assert all(file_split(f"pkg{f % 5}/m{f:03d}.py") == name for f in np.r_[fa, fb])
    assert build("retrieval", preset="quick", seed=0, **cfg).train.fingerprint() == t.train.fingerprint()
    assert build("retrieval", preset="quick", seed=1, **cfg).train.fingerprint() != t.train.fingerprint()
    with pytest.raises(ValueError, match="fewer than 2 files"):
        build("retrieval", root=str(root), seq_len=10_000)
