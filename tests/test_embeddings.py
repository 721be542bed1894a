"""H-SoftPOS and patch front-ends against plain loop implementations (float64), and in models."""

import math

import pytest
import torch

from longseq.models import CausalLM, SequenceClassifier, load
from longseq.nn.embeddings import HSoftPOS, PatchEmbedding, anthe_sinusoidal, make_embedding

F64 = dict(rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------- H-SoftPOS
def naive_hsoftpos(m: HSoftPOS, ids: torch.Tensor, offset: int = 0) -> torch.Tensor:
    """Anthe's H-SoftPOS with explicit loops over positions, channels and dilated taps."""
    B, L = ids.shape
    e, K = m.embed_dim, m.kernel_size
    pe = torch.zeros(L, e, dtype=torch.float64)
    n_sin = (e + 1) // 2
    for p in range(L):
        for j in range(e):
            jj = j if j < n_sin else j - n_sin
            angle = (offset + p) / 10000.0 ** (jj / (e / 2))
            pe[p, j] = math.sin(angle) if j < n_sin else math.cos(angle)
    x = m.table.weight[ids] * math.sqrt(e) + pe  # x_0 [B, L, e]
    levels = [x]
    for i, conv in enumerate(m.convs):
        dil, W, b = 2**i, conv.weight, conv.bias  # W [C_out, C_in, K]
        y = torch.zeros(B, L, W.shape[0], dtype=torch.float64)
        for t in range(L):
            acc = b.clone().expand(B, -1)
            for k in range(K):
                src = t - (K - 1 - k) * dil  # causal: taps at t, t-dil, t-2dil
                if src >= 0:
                    acc = acc + x[:, src] @ W[:, :, k].T
            y[:, t] = acc
        x = y
        levels.append(x)
    outs = []
    for x, sp in zip(levels, m.spos):
        n = sp.S.shape[0]
        w = torch.exp(x[..., :n] - x[..., :n].max(-1, keepdim=True).values)
        outs.append(torch.cat([x, (w / w.sum(-1, keepdim=True)) @ sp.S], -1))
    return torch.cat(outs, -1)


@pytest.mark.parametrize("d,levels", [(32, 2), (30, 3), (13, 1)])
@pytest.mark.parametrize("L", [1, 23])
def test_hsoftpos_matches_loops(d, levels, L):
    torch.manual_seed(0)
    m = HSoftPOS(50, d, levels=levels).double()
    ids = torch.randint(0, 50, (2, L))
    x, _ = m(ids, offset=3)
    ref = naive_hsoftpos(m, ids, offset=3)
    assert x.shape == (2, L, d)
    torch.testing.assert_close(x, ref, **F64)
    w = torch.randn_like(x)
    params = list(m.parameters())
    g = torch.autograd.grad((x * w).sum(), params)
    g_ref = torch.autograd.grad((ref * w).sum(), params)
    for a, b in zip(g, g_ref):
        torch.testing.assert_close(a, b, **F64)


def test_hsoftpos_widths_follow_anthe():
    m = HSoftPOS(32000, 512, levels=2)
    assert (m.embed_dim, m.local_dim) == (128, 128)
    assert m.table.weight.shape == (32000, 128)  # V x d -> V x e
    assert [c.dilation[0] for c in HSoftPOS(10, 64, levels=3).convs] == [1, 2]
    with pytest.raises(ValueError, match="levels"):
        HSoftPOS(10, 64, levels=0)
    with pytest.raises(ValueError, match="too small"):
        HSoftPOS(10, 3, levels=2)


def test_anthe_table_layout():
    pe = anthe_sinusoidal(5, 6, offset=2)
    assert torch.allclose(pe[0, :3], torch.sin(torch.tensor([2.0, 2 / 10000 ** (1 / 3), 2 / 10000 ** (2 / 3)])))
    assert torch.allclose(pe[0, 3:], torch.cos(torch.tensor([2.0, 2 / 10000 ** (1 / 3), 2 / 10000 ** (2 / 3)])))


def test_hsoftpos_is_causal_and_chunks_with_state():
    torch.manual_seed(0)
    m = HSoftPOS(20, 24, levels=3).double()
    ids = torch.randint(0, 20, (2, 30))
    full, _ = m(ids)
    ids2 = ids.clone()
    ids2[:, 17:] = torch.randint(0, 20, (2, 13))
    torch.testing.assert_close(m(ids2)[0][:, :17], full[:, :17], **F64)
    state, parts = m.init_state(2, dtype=torch.float64), []
    for a, b in [(0, 1), (1, 9), (9, 10), (10, 30)]:
        x, state = m(ids[:, a:b], offset=a, state=state)
        parts.append(x)
    torch.testing.assert_close(torch.cat(parts, 1), full, **F64)


# ---------------------------------------------------------------- patches
def naive_patches(m: PatchEmbedding, ids: torch.Tensor) -> torch.Tensor:
    B, L = ids.shape
    side, p = math.isqrt(L), m.patch_size
    g = -(-side // p)
    rows = []
    for b in range(B):
        seq = [m.cls] if m.cls is not None else []
        for gy in range(g):
            for gx in range(g):
                vec = []
                for dy in range(p):
                    for dx in range(p):
                        y, x = gy * p + dy, gx * p + dx
                        t = int(ids[b, y * side + x]) if y < side and x < side else None
                        if m.pixel == "value":
                            vec.append(
                                torch.tensor([0.0 if t is None else t / (m.vocab_size - 1)], dtype=torch.float64)
                            )
                        else:
                            vec.append(
                                torch.zeros(m.pixel_embed.embedding_dim, dtype=torch.float64)
                                if t is None
                                else m.pixel_embed.weight[t]
                            )
                seq.append(m.proj(torch.cat(vec)))
        rows.append(torch.stack(seq))
    return torch.stack(rows)


@pytest.mark.parametrize("side,p,pixel,cls", [(8, 4, "value", True), (7, 3, "embed", False), (6, 2, "value", False)])
def test_patches_match_loops(side, p, pixel, cls):
    torch.manual_seed(0)
    m = PatchEmbedding(256, 16, patch_size=p, pixel=pixel, pixel_dim=3, cls_token=cls).double()
    ids = torch.randint(0, 256, (2, side * side))
    x, _ = m(ids)
    n = (-(-side // p)) ** 2 + int(cls)
    assert x.shape == (2, n, 16)
    torch.testing.assert_close(x, naive_patches(m, ids), **F64)


def test_patch_mask_and_errors():
    m = PatchEmbedding(256, 8, patch_size=2, cls_token=True)
    mask = torch.zeros(1, 16, dtype=torch.bool)
    mask[0, :5] = True  # first row + one pixel of the second row
    assert m.output_mask(mask).tolist() == [[True, True, True, False, False]]
    with pytest.raises(ValueError, match="not a 3x3 image"):
        m(torch.zeros(1, 10, dtype=torch.long))
    with pytest.raises(ValueError, match="recurrent"):
        m(torch.zeros(1, 16, dtype=torch.long), offset=0, state={})
    with pytest.raises(ValueError, match="pixel"):
        PatchEmbedding(256, 8, pixel="rgb")
    with pytest.raises(ValueError, match="unknown option"):
        make_embedding("patches", 256, 8, patch=4)
    with pytest.raises(ValueError, match="unknown embedding"):
        make_embedding("wordpiece", 256, 8)


# ---------------------------------------------------------------- in models
def test_causal_lm_with_hsoftpos_steps_like_forward(tmp_path):
    torch.manual_seed(0)
    m = (
        CausalLM(
            30, 24, 2, mixer=["softmax", "s4d"], num_heads=2, embedding="hsoftpos", embedding_options={"levels": 3}
        )
        .double()
        .eval()
    )
    assert m.backbone.supports_step and m.backbone.embed.table.weight.shape == (30, 4)
    ids = torch.randint(0, 30, (2, 19))
    logits = m(ids)
    state, steps = m.init_state(2, dtype=torch.float64), []
    for t in range(ids.shape[1]):
        lt, state = m.step(ids[:, t], state)
        steps.append(lt)
    torch.testing.assert_close(torch.stack(steps, 1), logits, rtol=1e-9, atol=1e-9)
    l1, s = m(ids[:, :7], return_state=True)
    l2, _ = m(ids[:, 7:], state=s, return_state=True)
    torch.testing.assert_close(torch.cat([l1, l2], 1), logits, rtol=1e-9, atol=1e-9)
    ids2 = ids.clone()
    ids2[:, 12:] = (ids2[:, 12:] + 1) % 30
    torch.testing.assert_close(m(ids2)[:, :12], logits[:, :12], rtol=1e-12, atol=1e-12)
    assert torch.equal(
        m.generate(ids[:, :4], 5, temperature=0), m.generate(ids[:, :4], 5, temperature=0, use_cache=False)
    )
    # tied head goes through the narrower table; save/load round trip keeps it tied
    assert m.lm_head.table.weight is m.backbone.embed.table.weight
    m.save(tmp_path / "m")
    r = load(tmp_path / "m").double()
    torch.testing.assert_close(r(ids), logits)
    assert r.lm_head.table.weight is r.backbone.embed.table.weight
    untied = CausalLM(30, 24, 2, embedding="hsoftpos", tie_embeddings=False)
    assert isinstance(untied.lm_head, torch.nn.Linear)
    with pytest.raises(ValueError, match="patches"):
        CausalLM(30, 24, 1, embedding="patches")


def test_classifier_with_patches_pools_the_class_token():
    torch.manual_seed(0)
    m = (
        SequenceClassifier(
            256,
            3,
            16,
            1,
            num_heads=2,
            pooling="first",
            position="learned",
            max_len=17,
            embedding="patches",
            embedding_options={"patch_size": 4},
        )
        .double()
        .eval()
    )
    ids = torch.randint(0, 256, (2, 256))  # 16x16 images -> 16 patches + class token
    mask = torch.ones(2, 256, dtype=torch.bool)
    mask[1, 128:] = False  # bottom half of image 1 is padding
    h = m.backbone(ids, mask)
    assert h.shape == (2, 17, 16)
    torch.testing.assert_close(m(ids, mask), m.head(h[:, 0]))  # classified from the class token
    assert m.backbone.output_mask(mask)[1].tolist() == [True] * 9 + [False] * 8
    # padding invariance: changing padded pixels changes nothing
    ids2 = ids.clone()
    ids2[1, 128:] = 7
    torch.testing.assert_close(m(ids2, mask), m(ids, mask), rtol=1e-12, atol=1e-12)
    assert not m.backbone.supports_step


def test_builder_uses_class_token_pooling():
    from longseq import tasks
    from longseq.train import build_model

    task = tasks.build("pathfinder", n_train=2, n_val=1, n_test=1, cache=False)
    m = build_model(task, embedding="patches", embedding_options={"patch_size": 8}, d_model=16, n_layers=1)
    assert m.pooling == "first" and m.backbone.embed.cls is not None
    assert m(torch.randint(0, 256, (2, 1024))).shape == (2, 2)
    m = build_model(task, embedding="patches", embedding_options={"cls_token": False}, d_model=16, n_layers=1)
    assert m.pooling == "mean"
