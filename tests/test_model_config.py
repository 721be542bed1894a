"""ModelConfig / LayerSpec: hybrid stacks with per-layer options (Python and CLI syntax), the dict /
JSON round trip, save/load in the current schema and in the schema written before ModelConfig
(with option names renamed since), and the option vocabulary errors."""

import json
import warnings

import pytest
import torch
from safetensors.torch import save_model

import longseq
from longseq.models import CausalLM, LayerSpec, ModelConfig, SequenceClassifier, load, parse_layers
from longseq.models.config import SCHEMA, resolve_layers

torch.set_num_threads(1)


def _ids(V=20, B=2, L=12, seed=0):
    return torch.randint(0, V, (B, L), generator=torch.Generator().manual_seed(seed))


def _layer_options(model):
    return [(b.mixer.spec.name, b.mixer) for b in model.backbone.blocks]


def test_hybrid_stack_with_per_layer_options_from_python():
    """The issue's example: S4D layers with d_state=64, then one softmax layer with rope=True."""
    torch.manual_seed(0)
    m = CausalLM(
        20,
        32,
        mixer=[{"name": "s4d", "d_state": 64}, {"name": "s4d", "d_state": 64}, {"name": "softmax", "rope": True}],
        num_heads=4,
        mixer_options={"dropout": 0.0},
    )
    kinds = _layer_options(m)
    assert [k for k, _ in kinds] == ["s4d", "s4d", "softmax"]
    assert m.backbone.blocks[2].mixer.rope is not None
    assert m.backbone.blocks[2].mixer.num_heads == 4 and m.backbone.blocks[0].mixer.num_heads == 1
    # the shared option went only to the layer whose mixer has it
    assert [sp["options"] for sp in m.config["layers"]] == [
        {"d_state": 64},
        {"d_state": 64},
        {"dropout": 0.0, "rope": True},
    ]
    assert m(_ids()).shape == (2, 12, 20)


def test_explicit_layers_with_per_layer_overrides():
    layers = [
        LayerSpec("softmax", {"rope": True}, num_heads=2, ffn="swiglu", ffn_mult=2.0),
        LayerSpec("local", {"window": 4}, num_heads=8, ffn="none"),
    ]
    m = SequenceClassifier(20, 3, 32, layers=layers, num_heads=4)
    b0, b1 = m.backbone.blocks
    assert b0.mixer.num_heads == 2 and b1.mixer.num_heads == 8
    assert b1.ffn is None and b0.ffn is not None
    assert m.model_config.n_layers == 2 and m.config["n_layers"] == 2
    assert m(_ids()).shape == (2, 3)


def test_shared_option_that_no_layer_has_is_an_error():
    with pytest.raises(ValueError, match="unknown option"):
        CausalLM(20, 16, mixer=["s4d", "softmax"], mixer_options={"windw": 3})
    with pytest.raises(ValueError, match="unknown option"):
        CausalLM(20, 16, mixer=[{"name": "s4d", "rope": True}, "softmax"])  # per-layer options are strict
    with pytest.raises(ValueError, match="n_layers"):
        CausalLM(20, 16, 3, mixer=["s4d", "softmax"])
    with pytest.raises(ValueError, match="not both"):
        CausalLM(20, 16, layers=[LayerSpec("softmax")], mixer_options={"rope": True})


def test_config_round_trip_and_build_give_the_same_model():
    cfg = ModelConfig(
        vocab_size=20,
        d_model=16,
        layers=[LayerSpec("s4d", {"d_state": 8}), LayerSpec("softmax", {"rope": True})],
        num_heads=2,
        ffn="swiglu",
    )
    again = ModelConfig.from_json(cfg.to_json())
    assert again == cfg
    torch.manual_seed(1)
    a = cfg.build()
    torch.manual_seed(1)
    b = CausalLM.from_config(again)
    torch.manual_seed(1)
    c = CausalLM(**a.config)  # what the trainer does to rebuild a model
    ids = _ids()
    with torch.no_grad():
        torch.testing.assert_close(a(ids), b(ids), rtol=0, atol=0)
        torch.testing.assert_close(a(ids), c(ids), rtol=0, atol=0)
    assert isinstance(a, CausalLM) and a.model_config == cfg
    clf = ModelConfig(vocab_size=20, kind="classifier", num_classes=4, d_model=16).build()
    assert isinstance(clf, SequenceClassifier) and clf.config["num_classes"] == 4
    with pytest.raises(ValueError, match="num_classes"):
        ModelConfig(vocab_size=20, kind="classifier")
    with pytest.raises(ValueError, match="unknown model setting"):
        ModelConfig.from_dict({"vocab_size": 20, "d_modle": 16})


def test_save_load_current_schema(tmp_path):
    m = CausalLM(20, 16, mixer=[{"name": "s4d", "d_state": 8}, "softmax"], num_heads=2).eval()
    m.save(tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "config.json").read_text())
    assert meta["schema"] == SCHEMA and meta["config"]["layers"][0] == {"mixer": "s4d", "options": {"d_state": 8}}
    m2 = load(tmp_path / "m")
    ids = _ids()
    with torch.no_grad():
        torch.testing.assert_close(m(ids), m2(ids), rtol=0, atol=0)


def _write_old_folder(d, model, old_config):
    """A model folder exactly as the pre-ModelConfig code wrote it: no schema, constructor keywords."""
    from longseq.utils.io import sha256_file

    d.mkdir()
    save_model(model, str(d / "model.safetensors"))
    meta = {"class": type(model).__name__, "config": old_config, "weights_sha256": sha256_file(d / "model.safetensors")}
    (d / "config.json").write_text(json.dumps(meta, indent=2))


def test_old_schema_folder_with_renamed_options_loads(tmp_path):
    old = dict(
        vocab_size=20,
        d_model=16,
        n_layers=2,
        mixer=[{"name": "s4d", "lr": 0.002}, "softmax"],
        mixer_options={"dropout": 0.0},
        num_heads=2,
        norm="layernorm",
        ffn="mlp",
        ffn_mult=4.0,
        dropout=0.0,
        position="none",
        max_len=None,
        tie_embeddings=True,
    )
    torch.manual_seed(0)
    ref = CausalLM(20, 16, 2, mixer=[{"name": "s4d", "ssm_lr": 0.002}, "softmax"], num_heads=2).eval()
    _write_old_folder(tmp_path / "old", ref, old)
    with pytest.warns(FutureWarning, match="'lr' -> 'ssm_lr'"):
        m = load(tmp_path / "old")
    assert m.config["layers"][0]["options"] == {"ssm_lr": 0.002}
    ids = _ids()
    with torch.no_grad():
        torch.testing.assert_close(m(ids), ref(ids), rtol=0, atol=0)
    # an old classifier folder with a single mixer and shared options in the old names
    old_clf = dict(
        vocab_size=20,
        num_classes=3,
        d_model=16,
        n_layers=1,
        mixer="s5",
        mixer_options={"chunk": 8, "d_state": 8, "blocks": 2},
        num_heads=1,
        causal=None,
        pooling="mean",
        norm="layernorm",
        ffn="mlp",
        ffn_mult=4.0,
        dropout=0.0,
        position="none",
        max_len=None,
        pair=False,
    )
    ref = SequenceClassifier(20, 3, 16, 1, mixer="s5", mixer_options={"chunk_size": 8, "d_state": 8, "blocks": 2})
    _write_old_folder(tmp_path / "old_clf", ref, old_clf)
    with pytest.warns(FutureWarning, match="'chunk' -> 'chunk_size'"):
        m = load(tmp_path / "old_clf")
    with torch.no_grad():
        torch.testing.assert_close(m(ids), ref.eval()(ids), rtol=0, atol=0)


def test_old_schema_folder_without_renames_loads_silently(tmp_path):
    old = dict(
        vocab_size=20,
        d_model=16,
        n_layers=2,
        mixer="softmax",
        mixer_options=None,
        num_heads=2,
        norm="layernorm",
        ffn="mlp",
        ffn_mult=4.0,
        dropout=0.0,
        position="rope",
        max_len=None,
        tie_embeddings=True,
    )
    ref = CausalLM(**old).eval()
    _write_old_folder(tmp_path / "old", ref, old)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = load(tmp_path / "old")
    with torch.no_grad():
        torch.testing.assert_close(m(_ids()), ref(_ids()), rtol=0, atol=0)


def test_parse_layers_syntax():
    specs = parse_layers('s4d(d_state=64, init=inv)*3, softmax(rope=true,proj_options={"ratio": 0.1, "length": 2})')
    assert [s.mixer for s in specs] == ["s4d"] * 3 + ["softmax"]
    assert specs[0].options == {"d_state": 64, "init": "inv"} and specs[0] is not specs[1]
    assert specs[3].options == {"rope": True, "proj_options": {"ratio": 0.1, "length": 2}}
    assert [s.mixer for s in parse_layers("local,linear*2")] == ["local", "linear", "linear"]
    for bad, msg in [
        ("s4d(d_state=64", "unbalanced"),
        ("s4d*0", "positive integer"),
        ("s4d(d_state)", "KEY=VALUE"),
        ("s4d,,softmax", "empty layer"),
        ("(rope=true)", "missing mixer name"),
        ("s4d(d_state=4)x", "parentheses at the end"),
    ]:
        with pytest.raises(ValueError, match=msg):
            parse_layers(bad)


def test_cli_hybrid_stack_with_per_layer_options(tmp_path):
    from longseq.cli import main

    out = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--task",
                "mqar",
                "--task-option",
                "n_train=16",
                "--task-option",
                "n_val=8",
                "--task-option",
                "n_test=8",
                "--steps",
                "1",
                "--batch-size",
                "4",
                "--d-model",
                "16",
                "--num-heads",
                "2",
                "--no-progress",
                "--out",
                str(out),
                "--mixer",
                "s4d(d_state=8)*2,softmax(rope=true)",
                "--mixer-option",
                "dropout=0.0",
            ]
        )
        == 0
    )
    m = load(out / "model")
    assert [(sp["mixer"], sp["options"]) for sp in m.config["layers"]] == [
        ("s4d", {"d_state": 8}),
        ("s4d", {"d_state": 8}),
        ("softmax", {"dropout": 0.0, "rope": True}),
    ]


def test_option_vocabulary_errors_and_heads():
    with pytest.raises(ValueError, match="'lr' is now 'ssm_lr'"):
        longseq.mixers.build("s4d", 8, lr=1e-3)
    with pytest.raises(ValueError, match="'state_chunk' is now 'chunk_size'"):
        longseq.mixers.build("s4", 8, state_chunk=16)
    with pytest.raises(ValueError, match="'kernel' is now 'variant'"):
        longseq.mixers.build("gss", 8, kernel="dss")
    with pytest.raises(ValueError, match="no attention heads"):
        longseq.mixers.build("s4d", 8, num_heads=2)
    no_heads = {n for n in longseq.mixers.names() if not longseq.mixers.spec(n).heads}
    assert {"s4", "s4d", "dss", "s5", "gss", "flash"} <= no_heads
    for n in no_heads:  # vocabulary: no mixer without heads takes a heads-like option
        assert "num_heads" not in longseq.mixers.spec(n).cls.options()
    # the old spellings are gone from every constructor
    old = {"lr", "chunk", "state_chunk", "kernel_block", "expansion", "kernel"}
    for n in longseq.mixers.names():
        assert not old & set(longseq.mixers.spec(n).cls.options()), n


def test_declared_capabilities():
    spec = longseq.mixers.spec
    assert spec("evolving").uses_carry and not spec("softmax").uses_carry
    assert spec("linformer").max_len_option == "max_len" and spec("espa").max_len_option == "max_len"
    assert spec("softmax").max_len_option is None
    assert not any(spec(n).aux_loss for n in longseq.mixers.names())


def test_resolve_layers_copies_options():
    shared = {"rope": True}
    a, b = resolve_layers("softmax", 2, shared)
    a.options["rope"] = False
    assert b.options == {"rope": True} and shared == {"rope": True}


def test_cli_model_config_file_and_saved_folder(tmp_path, capsys):
    from longseq.cli import main

    cfg = ModelConfig(
        vocab_size=999,
        d_model=16,
        num_heads=2,
        layers=[LayerSpec("s4d", {"d_state": 8}), LayerSpec("softmax", {"rope": True}, num_heads=4, ffn="swiglu")],
    )
    d = cfg.to_dict()
    d.pop("vocab_size")  # the task sets it
    (tmp_path / "model.json").write_text(json.dumps(d))
    base = [
        "train",
        "--task",
        "mqar",
        "--task-option",
        "n_train=16",
        "--task-option",
        "n_val=8",
        "--task-option",
        "n_test=8",
        "--steps",
        "1",
        "--batch-size",
        "4",
        "--no-progress",
    ]
    assert main(base + ["--model-config", str(tmp_path / "model.json"), "--out", str(tmp_path / "a")]) == 0
    m = load(tmp_path / "a" / "model")
    assert m.model_config.layers == cfg.layers and m.backbone.blocks[1].mixer.num_heads == 4
    # a saved model folder works as a configuration too
    assert main(base + ["--model-config", str(tmp_path / "a" / "model"), "--out", str(tmp_path / "b")]) == 0
    assert load(tmp_path / "b" / "model").model_config == m.model_config
    capsys.readouterr()
    assert main(base + ["--model-config", str(tmp_path / "model.json"), "--d-model", "32"]) != 0
    assert "drop --d-model" in capsys.readouterr().err
    (tmp_path / "bad.json").write_text(json.dumps({**d, "vocab_size": 7}))
    assert main(base + ["--model-config", str(tmp_path / "bad.json")]) != 0
    assert "does not fit task 'mqar'" in capsys.readouterr().err


def test_aux_losses_come_from_declared_providers_only():
    from longseq.mixers import Mixer, register
    from longseq.mixers import base as mixer_base

    before = dict(mixer_base._REGISTRY)
    try:
        for name, declared in (("toy_aux", True), ("toy_undeclared", False)):

            @register(
                name,
                family="test",
                paper="-",
                complexity="O(N)",
                causal=True,
                bidirectional=True,
                step=False,
                aux_loss=declared,
            )
            class Toy(Mixer):
                def _forward(self, x, mask, state, return_state):
                    self.aux_loss = x.pow(2).mean()  # [] a penalty on the input
                    return x, None

        m = CausalLM(20, 16, mixer=["toy_aux", "toy_undeclared", "toy_aux"])
        m(_ids())
        losses = m.aux_losses()
        assert len(losses) == 2
        assert losses[0] is m.backbone.blocks[0].mixer.aux_loss and losses[1] is m.backbone.blocks[2].mixer.aux_loss
        from longseq.train.trainer import _aux_loss

        assert float(_aux_loss(m).detach()) == pytest.approx(float((losses[0] + losses[1]).detach()))
    finally:
        mixer_base._REGISTRY.clear()
        mixer_base._REGISTRY.update(before)


def test_folders_written_by_the_code_before_model_config_load(tmp_path):
    """tests/data/old_schema was written by commit 8ea64d0 (the last one before ModelConfig) with
    option names renamed since (s4d ``lr``, s5 ``chunk``); it loads, warns, and gives the outputs
    that code gave (recorded in reference.json; float32, same kernels)."""
    import pathlib
    import shutil

    src = pathlib.Path(__file__).parent / "data" / "old_schema"
    ref = json.loads((src / "reference.json").read_text())
    ids = torch.tensor(ref["ids"])
    for name, old in (("lm", "'lr' -> 'ssm_lr'"), ("clf", "'chunk' -> 'chunk_size'")):
        shutil.copytree(src / name, tmp_path / name)  # load() only reads, but keep the fixture pristine
        with pytest.warns(FutureWarning, match=old):
            m = load(tmp_path / name)
        with torch.no_grad():
            torch.testing.assert_close(m.eval()(ids), torch.tensor(ref[name]), rtol=1e-5, atol=1e-6)
        m.save(tmp_path / f"{name}_resaved")  # saved again: the new schema, no warning
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            again = load(tmp_path / f"{name}_resaved")
        assert json.loads((tmp_path / f"{name}_resaved" / "config.json").read_text())["schema"] == SCHEMA
        assert again.model_config == m.model_config


def test_models_saved_before_a_default_changed_keep_their_function(tmp_path):
    """h3's default discretisation became bilinear at schema 3: an h3 model saved at schema 2 (no
    ``disc`` recorded) loads with ``disc="zoh"``, the function it was trained as, and gives the
    same outputs as the model that was saved."""
    import json

    import longseq
    from longseq.models import CausalLM

    torch.manual_seed(0)
    zoh = CausalLM(11, 16, mixer=["h3", "softmax"], mixer_options={"d_state": 4})  # today's default: bilinear
    # the model as schema 2 built it: h3 with the then-default ZOH, the same weights
    ref = CausalLM(
        11, 16, layers=[{"mixer": "h3", "options": {"d_state": 4, "disc": "zoh"}}, {"mixer": "softmax", "options": {}}]
    )
    ref.load_state_dict(zoh.state_dict())
    d = ref.save(tmp_path / "m")
    meta = json.loads((d / "config.json").read_text())
    meta["schema"] = 2
    meta["config"]["layers"][0]["options"].pop("disc")
    (d / "config.json").write_text(json.dumps(meta))
    loaded = longseq.load(d)
    assert loaded.config["layers"][0]["options"]["disc"] == "zoh"
    ids = torch.randint(11, (2, 9))
    torch.testing.assert_close(loaded(ids), ref(ids), rtol=0, atol=0)
    assert not torch.allclose(zoh(ids), ref(ids))  # the new default is another function
