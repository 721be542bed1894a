"""Splits are map-style ``torch.utils.data.Dataset``s: ``split[i]`` is one example (a dict of
tensors), and ``DataLoader(split, batch_size=B)`` gives exactly the batches ``split.batch(index)``
gives, for every task kind (classification, lm, mlm, regression, parsing) and for the lazy splits
(LM byte windows, masked windows, retrieval pairs, compact cached splits)."""

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from longseq import tasks

SMALL = {
    # kind classification: a padded, cached compact split with lengths -> mask
    "listops": dict(preset="quick", n_train=24, n_val=8, n_test=8, min_length=10, max_length=40),
    # kind lm, a plain tensor split
    "mqar": dict(preset="quick", n_train=24, n_val=8, n_test=8),
    # kind lm, lazy byte windows over a memmap
    "lm_code": dict(seq_len=64, train_windows=40, max_train_bytes=50_000, max_eval_bytes=2_000),
    # kind mlm, masked windows drawn on the fly (mask only where padding)
    "mlm_code": dict(seq_len=64, train_windows=40, max_train_bytes=50_000, max_eval_bytes=2_000),
    # kind regression, float targets
    "burgers": dict(preset="tiny"),
    # kind parsing: extra ``lengths`` key
    "pcfg_synth": dict(preset="quick", n_train=24, n_val=8, n_test=8),
    # classification over document pairs [B, 2, L]
    "retrieval": dict(preset="quick", seed=0, seq_len=32, n_train=24, n_val=8, n_test=8),
}


@pytest.fixture(scope="module", params=sorted(SMALL))
def task(request, tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:  # build caches in a temporary data directory
        mp.setenv("LONGSEQ_DATA", str(tmp_path_factory.mktemp("data")))
        mp.setenv("LONGSEQ_PROGRESS", "0")
        return tasks.build(request.param, **SMALL[request.param])


def _same(a: dict, b: dict, where: str):
    """``a`` (DataLoader) equals ``b`` (split.batch); a mask the batch omits must be all True."""
    if "mask" in a and "mask" not in b:
        assert bool(a["mask"].all()), where
        a = {k: v for k, v in a.items() if k != "mask"}
    assert set(a) == set(b), (where, set(a), set(b))
    for k in b:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, (where, k, a[k].shape, b[k].shape)
        assert torch.equal(a[k], b[k]), (where, k)


@pytest.mark.parametrize("split", ["train", "validation"])
def test_dataloader_batches_equal_split_batch(task, split):
    s = getattr(task, split)
    assert isinstance(s, Dataset)
    n = len(s)
    for start in (0, max(0, n - 5)):  # the first batch and the ragged last one
        index = torch.arange(start, min(n, start + 5))
        got = next(iter(DataLoader(torch.utils.data.Subset(s, index.tolist()), batch_size=len(index))))
        _same(got, s.batch(index), f"{task.meta.name}/{split}[{start}:]")
    # a shuffled DataLoader over the whole split, as a user would write it
    g = torch.Generator().manual_seed(0)
    order = torch.randperm(n, generator=g)[:7]
    got = next(iter(DataLoader(s, batch_size=7, sampler=order.tolist())))
    _same(got, s.batch(order), f"{task.meta.name}/{split} shuffled")
    assert len(DataLoader(s, batch_size=8)) == -(-n // 8)


def test_item_is_one_example_and_bad_indices_raise(task):
    s = task.train
    item, last = s[0], s[-1]
    b = s.batch(torch.tensor([0, len(s) - 1]))
    for k, v in b.items():
        assert torch.equal(item[k], v[0]) and torch.equal(last[k], v[1]), k
    with pytest.raises(IndexError, match="out of range"):
        s[len(s)]
    with pytest.raises(TypeError, match="one int example index"):
        s[0:2]
