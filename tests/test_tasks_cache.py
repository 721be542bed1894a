"""The on-disk data cache: round trip, keying, atomic writes, corruption detection."""

import json

import numpy as np
import pytest
import torch

from longseq.tasks.cache import CacheError, CompactSplit, cached, data_dir, entry_path, load_entry


@pytest.fixture(autouse=True)
def _tmp_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LONGSEQ_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("LONGSEQ_PROGRESS", "0")


def _arrays(seed=0):
    rng = np.random.default_rng(seed)
    return {
        "train_inputs": rng.integers(0, 200, size=(10, 7)).astype(np.uint8),
        "train_targets": rng.integers(0, 3, size=10).astype(np.int64),
        "train_lengths": np.arange(1, 11, dtype=np.int32) % 7 + 1,
    }


class Counter:
    def __init__(self):
        self.calls = 0

    def __call__(self):
        self.calls += 1
        return _arrays()


def test_data_dir_from_env(tmp_path):
    assert data_dir() == tmp_path / "data"


def test_round_trip_and_reuse():
    build = Counter()
    cfg = {"n": 10, "length": 7}
    a = cached("toy", "quick", 0, cfg, build)
    b = cached("toy", "quick", 0, cfg, build)
    assert build.calls == 1
    ref = _arrays()
    for k in ref:
        assert isinstance(b[k], np.memmap)
        np.testing.assert_array_equal(a[k], ref[k])
        np.testing.assert_array_equal(b[k], ref[k])
        assert b[k].dtype == ref[k].dtype
    manifest = json.loads((entry_path("toy", "quick", 0, cfg) / "manifest.json").read_text())
    assert manifest["task"] == "toy" and manifest["seed"] == 0 and manifest["config"] == cfg
    assert manifest["sizes"]["train_inputs"] == [10, 7]
    assert len(manifest["arrays"]["train_inputs"]["sha256"]) == 64
    # no temporary directories are left behind
    assert [p.name for p in entry_path("toy", "quick", 0, cfg).parent.iterdir()] == [
        entry_path("toy", "quick", 0, cfg).name
    ]


def test_key_depends_on_everything():
    build = Counter()
    cached("toy", "quick", 0, {"n": 1}, build)
    cached("toy", "quick", 1, {"n": 1}, build)
    cached("toy", "lra", 0, {"n": 1}, build)
    cached("toy", "quick", 0, {"n": 2}, build)
    cached("toy", "quick", 0, {"n": 1}, build, source="v2")
    assert build.calls == 5
    cached("toy", "quick", 0, {"n": 1}, build)
    assert build.calls == 5


@pytest.mark.parametrize("damage", ["truncate", "flip", "manifest", "missing"])
def test_corruption_is_detected_and_rebuilt(damage):
    build = Counter()
    cfg = {"n": 10}
    cached("toy", "quick", 0, cfg, build)
    path = entry_path("toy", "quick", 0, cfg)
    f = path / "train_inputs.npy"
    if damage == "truncate":
        f.write_bytes(f.read_bytes()[:-5])
    elif damage == "flip":
        raw = bytearray(f.read_bytes())
        raw[-1] ^= 0xFF
        f.write_bytes(bytes(raw))
    elif damage == "manifest":
        (path / "manifest.json").write_text("{not json")
    else:
        f.unlink()
    with pytest.raises(CacheError):
        load_entry(path, verify="full")
    with pytest.raises(CacheError):
        cached("toy", "quick", 0, cfg, build, on_corrupt="raise")
    with pytest.warns(RuntimeWarning, match="rebuilding"):
        again = cached("toy", "quick", 0, cfg, build)
    assert build.calls == 2
    np.testing.assert_array_equal(again["train_inputs"], _arrays()["train_inputs"])
    load_entry(path, verify="full")


def test_failed_build_leaves_nothing():
    def boom():
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cached("toy", "quick", 0, {}, boom)
    assert not entry_path("toy", "quick", 0, {}).exists()


def test_disabled_cache_touches_no_disk():
    out = cached("toy", "quick", 0, {}, Counter(), enabled=False)
    assert not data_dir().exists()
    assert set(out) == set(_arrays())


def test_bad_options():
    with pytest.raises(ValueError, match="on_corrupt"):
        cached("toy", "quick", 0, {}, Counter(), on_corrupt="ignore")
    with pytest.raises(ValueError, match="object"):
        cached("toy", "quick", 0, {}, lambda: {"x": np.array([None])})


def test_compact_split_widens_and_masks():
    arrays = cached("toy", "quick", 0, {}, Counter())
    split = CompactSplit.from_arrays(arrays, "train")
    assert len(split) == 10
    b = split.batch(torch.tensor([0, 3]))
    assert b["inputs"].dtype == torch.int64 and b["targets"].dtype == torch.int64
    ref = _arrays()
    np.testing.assert_array_equal(b["inputs"].numpy(), ref["train_inputs"][[0, 3]])
    np.testing.assert_array_equal(b["mask"].sum(1).numpy(), ref["train_lengths"][[0, 3]])
    assert split.fingerprint() == CompactSplit.from_arrays(_arrays(), "train").fingerprint()
