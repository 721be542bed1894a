"""Model presets: configurations, building, forward, recurrent generation."""

import pytest
import torch

from longseq.models import CausalLM, SequenceClassifier, build_preset, preset_config
from longseq.models.presets import PRESETS, h3_attention_layers, preset_options

SMALL = {
    "spade": {"window": 4, "ssm_options": {"d_state": 8, "l_max": 32, "chunk_size": 8}},
    "h3_hybrid": {"h3_options": {"d_state": 8, "chunk_size": 16}},
    "anthe": {},
}


def test_h3_placement_is_the_papers():
    assert h3_attention_layers(12) == [1, 6]  # layers 2 and 7 of 12 (1-indexed: 2, N/2 + 1)
    assert h3_attention_layers(24) == [1, 12]
    assert h3_attention_layers(4) == [1, 2]
    assert h3_attention_layers(2) == [1]
    assert h3_attention_layers(1) == [0]
    names = [e["name"] for e in preset_config("h3_hybrid", 6)["mixer"]]
    assert names == ["h3", "softmax", "h3", "softmax", "h3", "h3"]
    names = [e["name"] for e in preset_config("h3_hybrid", 4, attn_layers=[3])["mixer"]]
    assert names == ["h3", "h3", "h3", "softmax"]


def test_spade_stack():
    cfg = preset_config("spade", 3, window=64)
    assert [e["name"] for e in cfg["mixer"]] == ["spade", "local", "local"]
    assert all(e["window"] == 64 and e["rope"] for e in cfg["mixer"]) and cfg["position"] == "none"


def test_anthe_config():
    cfg = preset_config("anthe", 2)
    assert cfg["embedding"] == "hsoftpos" and cfg["ffn"] == "swiglu" and not cfg["tie_embeddings"]
    assert all(e["name"] == "kgv" and e["proj"] == "tensor_chain" for e in cfg["mixer"])
    m = build_preset("anthe", 100, d_model=64, n_layers=2, num_heads=2)
    from longseq.nn.tensor_chain import TensorChainLinear

    blk = m.backbone.blocks[0]
    assert all(isinstance(lin, TensorChainLinear) for lin in (blk.mixer.key, blk.mixer.value, blk.mixer.gate))
    assert all(isinstance(lin, TensorChainLinear) for lin in (blk.ffn.w1, blk.ffn.w2, blk.ffn.w3))
    assert isinstance(blk.mixer.out, torch.nn.Linear) and isinstance(m.lm_head, torch.nn.Linear)
    dense = CausalLM(100, 64, 2, num_heads=2, ffn="swiglu", tie_embeddings=False)
    assert m.num_parameters() < dense.num_parameters() / 2


@pytest.mark.parametrize("name", PRESETS)
def test_causal_presets_build_forward_and_generate(name):
    torch.manual_seed(0)
    m = build_preset(name, 20, d_model=32, n_layers=2, num_heads=2, preset_options=SMALL[name]).eval()
    assert isinstance(m, CausalLM) and m.backbone.supports_step
    ids = torch.randint(0, 20, (2, 11))
    logits = m(ids)
    assert logits.shape == (2, 11, 20) and torch.isfinite(logits).all()
    # recurrent decoding (prefill + step) equals re-running the full forward
    cached = m.generate(ids[:, :5], 6, temperature=0, use_cache=True)
    full = m.generate(ids[:, :5], 6, temperature=0, use_cache=False)
    assert torch.equal(cached, full)
    # step logits match the forward's logits
    with torch.no_grad():
        state = m.init_state(2)
        steps = []
        for t in range(ids.shape[1]):
            lt, state = m.step(ids[:, t], state)
            steps.append(lt)
    torch.testing.assert_close(torch.stack(steps, 1), logits, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["spade", "h3_hybrid"])
def test_classifier_presets(name):
    m = build_preset(name, 20, num_classes=3, d_model=16, n_layers=2, num_heads=2, preset_options=SMALL[name])
    assert isinstance(m, SequenceClassifier)
    assert m(torch.randint(0, 20, (2, 9))).shape == (2, 3)


def test_errors():
    with pytest.raises(ValueError, match="unknown model preset"):
        preset_config("mamba")
    with pytest.raises(ValueError, match="unknown option.*windw"):
        preset_config("spade", 2, windw=3)
    with pytest.raises(ValueError, match="attn_layers"):
        preset_config("h3_hybrid", 2, attn_layers=[2])
    assert set(preset_options("spade")) == {"window", "ssm", "combine", "ssm_options"}


def test_cli_model_preset_and_embedding(tmp_path, capsys):
    from longseq.cli import main
    from longseq.models import load

    base = [
        "train",
        "--task",
        "mqar",
        "--task-option",
        "n_train=32",
        "--task-option",
        "n_val=8",
        "--task-option",
        "n_test=8",
        "--steps",
        "2",
        "--batch-size",
        "8",
        "--d-model",
        "16",
        "--no-progress",
    ]
    assert (
        main(
            base
            + [
                "--model-preset",
                "h3_hybrid",
                "--model-preset-option",
                "attn_layers=[0]",
                "--embedding",
                "hsoftpos",
                "--embedding-option",
                "levels=3",
                "--out",
                str(tmp_path / "h3"),
            ]
        )
        == 0
    )
    assert "mixer h3_hybrid" in capsys.readouterr().out
    m = load(tmp_path / "h3" / "model")
    assert [e["mixer"] for e in m.config["layers"]] == ["softmax", "h3"]
    assert m.config["embedding"] == "hsoftpos" and m.backbone.embed.levels == 3
