"""image (sequential Fashion-MNIST) on tiny idx fixtures written by the test."""

import gzip
import struct

import numpy as np
import pytest
import torch

from longseq.tasks import build, image


@pytest.fixture(autouse=True)
def _data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("LONGSEQ_DATA", str(tmp_path / "cache"))


def write_idx(path, arr, compress=True):
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    raw = bytes([0, 0, 8, arr.ndim]) + b"".join(struct.pack(">I", d) for d in arr.shape) + arr.tobytes()
    if compress:
        with gzip.open(path.with_name(path.name + ".gz"), "wb") as f:
            f.write(raw)
    else:
        path.write_bytes(raw)


def make_fmnist(d, n_train=120, n_test=40, compress=True, seed=0):
    rng = np.random.default_rng(seed)
    d.mkdir(parents=True, exist_ok=True)
    data = {
        "train": (rng.integers(0, 256, (n_train, 28, 28)), np.arange(n_train) % 10),
        "t10k": (rng.integers(0, 256, (n_test, 28, 28)), np.arange(n_test) % 10),
    }
    for split, (x, y) in data.items():
        write_idx(d / f"{split}-images-idx3-ubyte", x, compress)
        write_idx(d / f"{split}-labels-idx1-ubyte", y, compress)
    return data


def test_image_fixture(tmp_path):
    raw = make_fmnist(tmp_path / "fm")
    cfg = dict(data_dir=str(tmp_path / "fm"), n_train=100, n_val=20, n_test=30)
    t = build("image", preset="lra", seed=0, **cfg)
    assert t.meta.kind == "classification" and t.meta.vocab_size == 256 and t.meta.num_classes == 10
    assert t.meta.seq_len == 1024 and [len(s) for s in t.splits().values()] == [100, 20, 30]
    b = t.test.batch(torch.arange(3))
    assert b["inputs"].shape == (3, 1024) and b["inputs"].dtype == torch.int64 and "mask" not in b
    img = b["inputs"][1].reshape(32, 32)
    # 28x28 centred in 32x32 with a black 2-pixel border; the test split is the first n_test images in order
    assert torch.equal(img[2:30, 2:30], torch.from_numpy(raw["t10k"][0][1].astype(np.int64)))
    assert img[:2].abs().sum() == 0 and img[:, 30:].abs().sum() == 0
    assert b["targets"].tolist() == [0, 1, 2]
    # train and validation are disjoint subsets of the 120 training images
    tr = {bytes(x.numpy().astype(np.uint8)) for x in t.train.batch(torch.arange(100))["inputs"]}
    va = {bytes(x.numpy().astype(np.uint8)) for x in t.validation.batch(torch.arange(20))["inputs"]}
    assert len(tr) == 100 and len(va) == 20 and not tr & va
    assert sum(t.meta.extra["class_counts"]["train"]) == 100

    again = build("image", preset="lra", seed=0, **cfg)
    other = build("image", preset="lra", seed=1, **cfg)
    assert again.train.fingerprint() == t.train.fingerprint()
    assert other.train.fingerprint() != t.train.fingerprint()
    assert other.test.fingerprint() == t.test.fingerprint()


def test_image_quick_downsample_and_permute(tmp_path):
    raw = make_fmnist(tmp_path / "fm", compress=False)
    q = build("image", preset="quick", data_dir=str(tmp_path / "fm"), n_train=50, n_val=10, n_test=10)
    assert q.meta.seq_len == 256
    x = q.test.batch(torch.tensor([0]))["inputs"].reshape(16, 16)
    want = np.rint(raw["t10k"][0][0].reshape(14, 2, 14, 2).mean(axis=(1, 3)))
    assert np.array_equal(x[1:15, 1:15].numpy(), want)
    p = build("image", preset="quick", data_dir=str(tmp_path / "fm"), n_train=50, n_val=10, n_test=10, permute=True)
    xp = p.test.batch(torch.tensor([0]))["inputs"][0]
    assert sorted(xp.tolist()) == sorted(x.reshape(-1).tolist()) and not torch.equal(xp, x.reshape(-1))


def test_image_errors(tmp_path, monkeypatch):
    monkeypatch.setattr(image, "DEBIAN_DIR", tmp_path / "nothing")
    with pytest.raises(FileNotFoundError, match="dataset-fashion-mnist"):
        build("image")
    with pytest.raises(FileNotFoundError, match="data_dir"):
        build("image", data_dir=str(tmp_path))
    make_fmnist(tmp_path / "fm")
    with pytest.raises(ValueError, match="n_train"):
        build("image", data_dir=str(tmp_path / "fm"), n_train=200)
    with pytest.raises(ValueError, match="downsample"):
        build("image", data_dir=str(tmp_path / "fm"), downsample=3)
