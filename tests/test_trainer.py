"""Trainer: exact resume, parameter groups, schedule, data order, evaluation aggregation, errors."""

import json
import math

import pytest
import torch
from torch import nn

import longseq
from longseq.optim import param_groups, set_optim
from longseq.train import TrainConfig, build_model, evaluate, train
from longseq.train.trainer import batch_indices, lr_lambda


def tiny_task():
    return longseq.tasks.build("mqar", seq_len=24, num_kv_pairs=3, vocab_size=64, n_train=96, n_val=20, n_test=20)


def cfg(**kw):
    base = dict(
        steps=6, batch_size=8, lr=3e-3, warmup=2, eval_every=3, log_every=1, checkpoint_every=3, progress=False, seed=0
    )
    return TrainConfig.from_dict({**base, **kw})


def losses(run_dir):
    recs = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in recs if r["split"] == "train"]


def test_resume_is_bit_exact(tmp_path, monkeypatch):
    task = tiny_task()
    torch.manual_seed(0)
    full = build_model(task, "softmax", d_model=32, dropout=0.1)  # dropout: the RNG state must resume too
    train(full, task, cfg(), tmp_path / "full")

    # The same run killed right after its step-3 checkpoint ...
    import longseq.train.trainer as tr

    real_save = tr._save_checkpoint

    def save_then_die(path, model, opt, sched, step, c, **kw):
        real_save(path, model, opt, sched, step, c, **kw)
        if step == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(tr, "_save_checkpoint", save_then_die)
    torch.manual_seed(0)
    with pytest.raises(KeyboardInterrupt):
        train(build_model(task, "softmax", d_model=32, dropout=0.1), task, cfg(), tmp_path / "cut")
    monkeypatch.setattr(tr, "_save_checkpoint", real_save)
    # ... and resumed into a freshly initialised model: same losses, same final weights.
    torch.manual_seed(123)
    resumed = build_model(task, "softmax", d_model=32, dropout=0.1)
    train(resumed, task, cfg(), tmp_path / "cut", resume=True)
    assert losses(tmp_path / "cut") == losses(tmp_path / "full")
    assert [s for s, _ in losses(tmp_path / "cut")] == [1, 2, 3, 4, 5, 6]
    for (n, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), n


def test_training_reduces_loss():
    task = tiny_task()
    m = build_model(task, "softmax", d_model=32)
    before = evaluate(m, task.validation)["loss"]
    train(m, task, cfg(steps=30, lr=1e-2))
    assert evaluate(m, task.validation)["loss"] < before - 0.5


def test_param_groups_and_tagged_parameters():
    m = nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 4), nn.LayerNorm(4))
    tagged = nn.Parameter(torch.zeros(3, 3))
    m.register_parameter("A", set_optim(tagged, lr=1e-3, weight_decay=0.0))
    groups = param_groups(m, lr=1e-2, weight_decay=0.1)
    by_name = {n: g for g in groups for n in g["names"]}
    assert by_name["1.weight"]["weight_decay"] == 0.1 and by_name["1.weight"]["lr"] == 1e-2
    for n in ("0.weight", "1.bias", "2.weight", "2.bias"):
        assert by_name[n]["weight_decay"] == 0.0
    assert by_name["A"]["lr"] == 1e-3 and by_name["A"]["weight_decay"] == 0.0
    assert len(by_name["A"]["params"]) == 1
    opt = torch.optim.AdamW(groups, lr=1e-2)
    assert any(g["lr"] == 1e-3 for g in opt.param_groups)
    with pytest.raises(ValueError, match="unknown settings"):
        set_optim(tagged, momentum=0.9)


def test_schedule_warmup_then_cosine():
    c = TrainConfig(steps=100, warmup=10, min_lr_ratio=0.1)
    f = lr_lambda(c)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(10) == pytest.approx(1.0) and f(100) == pytest.approx(0.1)
    assert f(55) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))


def test_batch_order_is_a_pure_function_and_covers_each_epoch():
    n, b = 10, 4
    seen = torch.cat([batch_indices(n, b, c, seed=5) for c in range(0, 20, b)])
    assert sorted(seen[:10].tolist()) == list(range(10)) and sorted(seen[10:].tolist()) == list(range(10))
    assert torch.equal(batch_indices(n, b, 8, 5), batch_indices(n, b, 8, 5))
    assert not torch.equal(batch_indices(n, b, 0, 5), batch_indices(n, b, 0, 6))


def test_evaluate_counts_tokens_not_batches():
    task = tiny_task()
    m = build_model(task, "softmax", d_model=16)
    small = evaluate(m, task.test, batch_size=3)
    big = evaluate(m, task.test, batch_size=20)
    assert small["count"] == big["count"] == int((task.test.targets != -100).sum())
    assert small["accuracy"] == pytest.approx(big["accuracy"]) and small["loss"] == pytest.approx(big["loss"])


def test_corrupt_checkpoint_and_bad_config(tmp_path):
    task = tiny_task()
    m = build_model(task, "softmax", d_model=16)
    train(m, task, cfg(steps=2, checkpoint_every=2), tmp_path)
    (tmp_path / "checkpoint.pt").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="corrupt"):
        train(m, task, cfg(steps=4), tmp_path, resume=True)
    with pytest.raises(FileNotFoundError):
        train(m, task, cfg(steps=4), tmp_path / "none", resume=True)
    with pytest.raises(ValueError, match="unknown trainer setting"):
        TrainConfig.from_dict({"stepz": 3})
    with pytest.raises(ValueError, match="steps"):
        train(m, task, cfg(steps=0))
