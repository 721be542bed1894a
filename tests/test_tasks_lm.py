"""lm_code / lm_dict and ByteWindowSplit on tiny fixtures (no Debian packages needed)."""

import gzip
import hashlib
import math

import numpy as np
import pytest
import torch

from longseq.tasks import IGNORE, build, lm


@pytest.fixture(autouse=True)
def _data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("LONGSEQ_DATA", str(tmp_path / "cache"))


def make_stdlib(root, n_files=40, seed=0):
    """A fake stdlib: random-ish .py files in a few packages, plus dirs that must be skipped."""
    rng = np.random.default_rng(seed)
    words = [b"def", b"return", b"self", b"import", b"class", b"for", b"in", b"x", b"(", b")", b":", b"\n    "]
    for i in range(n_files):
        pkg = ["", "email/", "json/", "test/"][i % 4]
        path = root / f"{pkg}mod{i:02d}.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b" ".join(words[j] for j in rng.integers(0, len(words), size=int(rng.integers(50, 400)))))
    for skip in ("site-packages/pkg", "__pycache__", "dist-packages"):
        (root / skip).mkdir(parents=True, exist_ok=True)
        (root / skip / "skipped.py").write_bytes(b"SKIPPED\n" * 100)
    (root / "notes.txt").write_bytes(b"not python")
    return root


def test_byte_window_split_train_and_eval():
    data = np.arange(1000, dtype=np.int64).astype(np.uint8)
    ev = lm.ByteWindowSplit(data, 64)
    assert len(ev) == math.ceil(999 / 64)
    b = ev.batch(torch.arange(len(ev)))
    assert b["inputs"].shape == (len(ev), 64) and b["inputs"].dtype == torch.int64
    t = b["targets"].reshape(-1)
    # every byte after the first is a target exactly once, in order
    assert torch.equal(t[t != IGNORE], torch.from_numpy(data[1:].astype(np.int64)))
    assert torch.equal(b["inputs"].reshape(-1)[:999], torch.from_numpy(data[:999].astype(np.int64)))

    tr = lm.ByteWindowSplit(data, 64, windows=500, seed=3)
    assert len(tr) == 500
    idx = torch.tensor([7, 0, 499, 7])
    b = tr.batch(idx)
    assert torch.equal(b["inputs"][0], b["inputs"][3])  # pure function of index
    assert torch.equal(b["inputs"][:, 1:], b["targets"][:, :-1])  # shifted by one byte
    assert (b["targets"] != IGNORE).all()
    o = tr.offsets(np.arange(500))
    assert o.min() >= 0 and o.max() <= 1000 - 64 - 1 and len(np.unique(o)) > 300
    assert np.array_equal(o, lm.ByteWindowSplit(data, 64, windows=500, seed=3).offsets(np.arange(500)))
    assert not np.array_equal(o, lm.ByteWindowSplit(data, 64, windows=500, seed=4).offsets(np.arange(500)))
    with pytest.raises(IndexError):
        tr.batch(torch.tensor([500]))
    with pytest.raises(ValueError):
        lm.ByteWindowSplit(data[:10], 64)


def test_lm_code_fixture(tmp_path):
    root = make_stdlib(tmp_path / "stdlib")
    cfg = dict(root=str(root), seq_len=32, train_windows=100, max_train_bytes=None, max_eval_bytes=None)
    a = build("lm_code", preset="quick", seed=0, **cfg)
    b = build("lm_code", preset="quick", seed=0, **cfg)  # second build loads the cache
    assert a.meta.kind == "lm" and a.meta.vocab_size == 256 and a.meta.metric == "bpb" and a.meta.seq_len == 32
    for s in ("train", "validation", "test"):
        assert getattr(a, s).fingerprint() == getattr(b, s).fingerprint()
    assert build("lm_code", preset="quick", seed=1, **cfg).train.fingerprint() != a.train.fingerprint()

    files = lm.stdlib_files(root)
    assert len(files) == 40 and files == sorted(files)
    assert not any("skipped" in f or f.endswith(".txt") for f in files)
    h = hashlib.sha256()
    for rel in files:
        h.update(rel.encode() + b"\0" + (root / rel).read_bytes())
    assert a.meta.extra["corpus_fingerprint"] == h.hexdigest()

    # split by sha1(relpath): each split's bytes are its files concatenated in path order
    def bucket(f):
        r = int(hashlib.sha1(f.encode()).hexdigest(), 16) % 100
        return "train" if r < 90 else "validation" if r < 95 else "test"

    for s in ("train", "validation", "test"):
        want = b"".join((root / f).read_bytes() for f in files if bucket(f) == s)
        assert bytes(getattr(a, s).data) == want
    assert sum(a.meta.extra["num_files"].values()) == 40
    assert set(a.model_defaults) >= {"d_model", "n_layers", "num_heads"}
    assert set(a.train_defaults) == {"steps", "batch_size", "lr", "warmup", "weight_decay"}

    small = build("lm_code", preset="quick", root=str(root), seq_len=16, max_train_bytes=500, max_eval_bytes=100)
    assert small.train.num_bytes == 500 and small.validation.num_bytes <= 100
    no_tests = build("lm_code", preset="quick", root=str(root), include_tests=False, seq_len=16)
    assert sum(no_tests.meta.extra["num_files"].values()) == 30  # the 10 files under test/ dropped


def test_lm_dict_fixture(tmp_path):
    text = b"".join(b"WORD%d\n   n. A definition of word %d.\n\n" % (i, i) for i in range(2000))
    dz = tmp_path / "gcide.dict.dz"
    with gzip.open(dz, "wb") as f:
        f.write(text)
    plain = tmp_path / "gcide.txt"
    plain.write_bytes(text)
    t = build(
        "lm_dict", preset="quick", path=str(dz), seq_len=64, train_windows=50, max_train_bytes=None, max_eval_bytes=None
    )
    n = len(text)
    assert t.train.num_bytes == int(0.9 * n) and t.validation.num_bytes == int(0.05 * n)
    assert bytes(t.train.data) + bytes(t.validation.data) + bytes(t.test.data) == text
    t2 = build(
        "lm_dict",
        preset="quick",
        path=str(plain),
        seq_len=64,
        train_windows=50,
        max_train_bytes=None,
        max_eval_bytes=None,
    )
    assert t2.test.fingerprint() == t.test.fingerprint() and t2.train.fingerprint() == t.train.fingerprint()


def test_missing_sources_say_where_to_get_them(tmp_path, monkeypatch):
    monkeypatch.setattr(lm, "gcide_candidates", lambda: [tmp_path / "nope.dict.dz"])
    with pytest.raises(FileNotFoundError, match="dict-gcide"):
        build("lm_dict")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        build("lm_code", root=str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="unknown setting"):
        build("lm_code", bogus=1)
