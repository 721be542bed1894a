"""Fine-tuning from a pre-trained MaskedLM: exact encoder transfer, the load report, architecture
mismatches, layer-wise lr decay, frozen embeddings, the CLI's --init-from."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from longseq.models import (
    MaskedLM,
    SequenceClassifier,
    classifier_from_pretrained,
    freeze_embeddings,
    layerwise_lr_decay,
    load_encoder,
)
from longseq.optim import param_groups

torch.set_num_threads(1)

ARCH = dict(d_model=32, n_layers=2, num_heads=2)


def _mlm(mixer="softmax", **kw):
    torch.manual_seed(0)
    m = MaskedLM(257, mixer=mixer, **{**ARCH, **kw})
    with torch.no_grad():  # move away from init so a copy cannot pass by chance
        for p in m.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return m.eval()


@pytest.mark.parametrize(
    "mixer,kw",
    [
        ("softmax", {}),
        ("softmax", {"position": "deberta", "max_len": 64}),
        ("linformer", {"mixer_options": {"k": 8, "max_len": 64}}),
        ("s4d", {"mixer_options": {"d_state": 8}}),
        ("bigbird", {"mixer_options": {"block_size": 4, "num_random_blocks": 1}}),
        ([{"name": "s4d", "d_state": 8}, "softmax"], {}),
    ],
)
def test_loaded_encoder_equals_pretrained_encoder(mixer, kw):
    mlm = _mlm(mixer, **kw)
    torch.manual_seed(1)
    clf, report = classifier_from_pretrained(mlm, 3)
    clf.eval()
    ids = torch.randint(0, 256, (3, 40))
    mask = torch.arange(40)[None] < torch.tensor([[40], [31], [7]])
    assert torch.equal(clf.backbone(ids, mask), mlm.encode(ids, mask))
    assert torch.equal(clf.backbone(ids), mlm.encode(ids))
    # the report names every tensor of both models, each once
    assert sorted(report.loaded + report.initialised) == sorted(clf.state_dict())
    assert sorted(report.loaded + report.skipped) == sorted(mlm.state_dict())
    assert set(report.skipped) == {
        "mlm_bias",
        "mlm_transform.weight",
        "mlm_transform.bias",
        "mlm_norm.weight",
        "mlm_norm.bias",
    }
    assert all(n.startswith("head.") for n in report.initialised)
    lines = str(report).splitlines()
    assert len(lines) == 1 + len(mlm.state_dict()) + len(report.initialised)  # one line per tensor
    assert "  loaded      backbone.norm.weight" in lines


def test_bigbird_encoder_saves_and_loads_with_its_random_pattern(tmp_path):
    """BigBird's random-block seed is extra state: it must survive model.save and the transfer."""
    mlm = _mlm("bigbird", mixer_options={"block_size": 4, "num_random_blocks": 1})
    mlm.save(tmp_path / "m")
    clf, _ = classifier_from_pretrained(str(tmp_path / "m"), 2)
    clf.eval()
    ids = torch.randint(0, 256, (2, 64))  # longer than the dense threshold: the sparse path
    assert torch.equal(clf.backbone(ids), mlm.encode(ids))
    assert [b.mixer.seed for b in clf.backbone.blocks] == [b.mixer.seed for b in mlm.backbone.blocks]


def test_load_from_saved_model_and_run_dir(tmp_path):
    mlm = _mlm()
    mlm.save(tmp_path / "run" / "model")
    ids = torch.randint(0, 256, (2, 24))
    for src in (tmp_path / "run", tmp_path / "run" / "model"):
        clf, report = classifier_from_pretrained(str(src), 2, pair=True)
        clf.eval()
        assert torch.equal(clf.backbone(ids), mlm.encode(ids))
        assert report.source == str(src)
    with pytest.raises(FileNotFoundError, match="run directory"):
        classifier_from_pretrained(str(tmp_path / "nothing"), 2)


@pytest.mark.parametrize(
    "change,name",
    [
        ({"d_model": 16}, "d_model"),
        ({"n_layers": 3}, "n_layers"),
        ({"mixer": "linear"}, r"layers\[0\]\.mixer"),
        ({"num_heads": 4}, "num_heads"),
        ({"position": "sinusoidal"}, "position"),
        ({"mixer_options": {"rope": True}}, r"layers\[0\]\.options"),
    ],
)
def test_mismatched_architecture_names_first_difference(change, name):
    mlm = _mlm()
    clf = SequenceClassifier(257, 2, **{**ARCH, "mixer": "softmax", **change})
    with pytest.raises(ValueError, match=f"differs at '{name}'"):
        load_encoder(clf, mlm)
    with pytest.raises(ValueError, match=f"differs at '{name}'"):
        classifier_from_pretrained(mlm, 2, **change)


def test_mismatched_tensor_names_it():
    mlm = _mlm()
    clf = SequenceClassifier(257, 2, mixer="softmax", **ARCH)
    clf.backbone.blocks[1].ffn.w1 = nn.Linear(32, 64)  # same config, a different tensor shape
    with pytest.raises(ValueError, match=r"backbone\.blocks\.1\.ffn\.w1\.weight has shape \[64, 32\]"):
        load_encoder(clf, mlm)
    before = clf.backbone.blocks[0].norm1.weight.clone()
    assert torch.equal(clf.backbone.blocks[0].norm1.weight, before)  # nothing copied before the check


def test_vocabulary_mismatch():
    clf = SequenceClassifier(256, 2, mixer="softmax", **ARCH)
    with pytest.raises(ValueError, match="differs at 'vocab_size'"):
        load_encoder(clf, _mlm())


def test_layerwise_lr_decay_and_freezing():
    clf, _ = classifier_from_pretrained(_mlm([{"name": "s4d", "d_state": 8}, "softmax"]), 2)
    scales = layerwise_lr_decay(clf, 0.5)
    assert scales["head.weight"] == 1.0 and scales["backbone.norm.weight"] == 1.0
    assert scales["backbone.blocks.1.mixer.qkv.weight"] == 0.5
    assert scales["backbone.blocks.0.norm1.weight"] == 0.25
    assert scales["backbone.embed.weight"] == 0.125
    lr = {}
    for g in param_groups(clf, 1e-2, 0.1):
        for n in g["names"]:
            lr[n] = (g["lr"], g["weight_decay"])
    assert lr["head.weight"] == (1e-2, 0.1)
    assert lr["backbone.blocks.1.ffn.w1.weight"] == (5e-3, 0.1)  # decay rule kept, lr scaled
    assert lr["backbone.embed.weight"] == (1.25e-3, 0.0)
    # the SSM's own rate (s4d tags A, dt with ssm_lr 1e-3, no decay) is scaled too
    tagged = [n for n in lr if n.startswith("backbone.blocks.0.mixer.") and lr[n][1] == 0.0 and lr[n][0] == 2.5e-4]
    assert tagged, lr
    frozen = freeze_embeddings(clf)
    assert frozen == ["backbone.embed.weight"]
    names = {n for g in param_groups(clf, 1e-2, 0.1) for n in g["names"]}
    assert "backbone.embed.weight" not in names and "head.weight" in names
    with pytest.raises(ValueError, match="decay"):
        layerwise_lr_decay(clf, 1.5)


def _tiny_retrieval():
    from longseq import tasks

    return tasks.build("retrieval", preset="quick", seed=0, seq_len=32, n_train=64, n_val=16, n_test=16)


def test_finetune_model_and_cli(tmp_path, capsys):
    from longseq.cli import main
    from longseq.train import finetune_model

    mlm = _mlm()
    mlm.save(tmp_path / "pre" / "model")
    task = _tiny_retrieval()
    model, report = finetune_model(task, str(tmp_path / "pre"), layer_lr_decay=0.9, freeze_embeddings=True)
    assert model.pair and model.config["num_classes"] == 2
    assert not model.backbone.embed.weight.requires_grad
    with pytest.raises(ValueError, match="differs at 'd_model'"):
        finetune_model(task, str(tmp_path / "pre"), d_model=48)

    out = tmp_path / "ft"
    rc = main(
        [
            "train",
            "--task",
            "retrieval",
            "--task-option",
            "seq_len=32",
            "--task-option",
            "n_train=64",
            "--task-option",
            "n_val=16",
            "--task-option",
            "n_test=16",
            "--init-from",
            str(tmp_path / "pre"),
            "--steps",
            "3",
            "--batch-size",
            "4",
            "--eval-every",
            "3",
            "--no-progress",
            "--freeze-embeddings",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    text = capsys.readouterr().out
    assert "loaded      backbone.embed.weight" in text and "skipped     mlm_bias" in text
    rec = json.loads((out / "init_report.json").read_text())
    assert rec["freeze_embeddings"] is True and "head.0.weight" in rec["initialised"]
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["init_from"]["loaded"] == len(rec["loaded"])
    # embeddings frozen through training: still the pre-trained table
    from longseq import load

    assert torch.equal(load(out / "model").backbone.embed.weight, mlm.backbone.embed.weight)
    assert main(["train", "--task", "retrieval", "--layer-lr-decay", "0.9", "--out", str(tmp_path / "x")]) != 0
    assert "give --init-from" in capsys.readouterr().err
