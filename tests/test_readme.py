"""Every ```python block of README.md runs, in order, in one namespace (as a reader would paste
them; each block defines its own inputs), and the few sizes that would make a block slow on a CPU are shrunk by the substitutions in
``SHRINK``: each must still match the README text, so the test notices when the README changes."""

import pathlib
import re

import pytest
import torch

import longseq
from longseq.mixers import base as mixer_base

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"

# (old text, new text): training lengths and dataset sizes only; the code is otherwise run as written.
SHRINK = [
    (
        'longseq.tasks.build("mqar", preset="quick", seed=0)',
        'longseq.tasks.build("mqar", preset="quick", seed=0, n_train=64, n_val=16, n_test=16)',
    ),
    ("TrainConfig(steps=1500, batch_size=64, lr=3e-3)", "TrainConfig(steps=2, batch_size=8, lr=3e-3, progress=False)"),
    ("max_new_tokens=100", "max_new_tokens=5"),
]


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


def test_readme_has_the_examples_the_issue_asks_for():
    blocks = python_blocks(README.read_text())
    assert len(blocks) >= 5
    joined = "\n".join(blocks)
    assert "LayerSpec(" in joined and '{"name": "softmax", "rope": True}' in joined  # per-layer options
    for old, _ in SHRINK:
        assert old in joined, f"README no longer contains {old!r}: update SHRINK"


def test_readme_python_blocks_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # lm.save("my_model"), runs/...
    torch.manual_seed(0)
    namespace: dict = {}
    before = dict(mixer_base._REGISTRY)
    try:
        for i, block in enumerate(python_blocks(README.read_text())):
            for old, new in SHRINK:
                block = block.replace(old, new)
            try:
                exec(compile(block, f"README.md python block {i}", "exec"), namespace)
            except Exception as e:  # name the block in the failure
                pytest.fail(f"README python block {i} failed: {type(e).__name__}: {e}\n{block}")
    finally:  # the "Adding a mixer" example registers my_mixer: undo it
        mixer_base._REGISTRY.clear()
        mixer_base._REGISTRY.update(before)
    # what the blocks promise
    assert namespace["y"].shape == (2, 1000, 256)
    assert namespace["logits"].shape == (2, 10)
    assert namespace["out"].shape == (2, 8 + 5)
    assert type(namespace["lm2"]) is longseq.models.CausalLM
    hybrid = namespace["hybrid"]
    assert [b.mixer.spec.name for b in hybrid.backbone.blocks] == ["s4d", "s4d", "softmax"]
    assert namespace["stack"].backbone.blocks[2].mixer.num_heads == 8
    assert namespace["same"].model_config == namespace["cfg"]
    assert set(namespace["final"]) >= {"validation", "test"}
