"""Input front-ends that replace the plain token table of a model (``embedding=`` option).

``token``     the default ``nn.Embedding(vocab, d_model)`` (built by the backbone itself).

``hsoftpos``  H-SoftPOS, the hierarchical embedding of Anthe (Herranz-Celotti & Rrapaj 2023,
              "Less is More! A slim architecture for optimal language translation", arXiv
              2305.10991; checked against the official TF code ``neural_models_tf/special_embedding.py``,
              flag ``hsoftpos:2``). With ``n = levels`` and ``l = d // (2n)``, ``e = d - l (2n - 1)``:

                  x_0     = E[tokens] * sqrt(e) + PE_e(positions)          E in R^{V x e}
                  x_{i+1} = CausalConv1d_i(x_i)   (l filters, kernel 3, dilation 2^i, bias, linear)
                  SoftPOS_i(x) = [x ; softmax(x[..., :l]) S_i]             S_i in R^{l x l}
                  out     = [SoftPOS_0(x_0) ; ... ; SoftPOS_{n-1}(x_{n-1})]  (width e + l + (n-1) 2l = d)

              so the token table shrinks from V x d to V x e (d = 512, n = 2: 128 columns).

``patches``   ViT patch embedding (Dosovitskiy et al. 2021, "An Image is Worth 16x16 Words",
              sec. 3.1, eq. 1): the raster-order pixel tokens of a square image are cut into
              non-overlapping p x p patches, each flattened and mapped by one linear layer to
              d_model, with an optional learned class token in front (``pooling="first"``).

Decisions on points the sources leave open:

* H-SoftPOS, checked against the official code: ``n - 1`` convolutions (the last level has none),
  SoftPOS with ``n_subpos = add_units = l`` and one repeat, orthogonal ``S_i``, Keras
  ``Conv1D(padding='causal')`` (glorot-uniform kernel, zero bias), and Anthe's own sinusoidal table
  ``PE = [sin(p r_j) ; cos(p r_j)]``, ``r_j = 10000^(-j / (e/2))`` (sines first, not interleaved;
  for odd ``e`` the sines take the extra column). The table is initialised ``N(0, 1/e)`` so that
  ``E * sqrt(e)`` has unit-variance entries (Keras' uniform(+-0.05) default is tied to d = 512).
* The convolutions are causal in every model (also in bidirectional classifiers, as in Anthe's
  encoder), so right padding never reaches real positions. Recurrent decoding keeps, per
  convolution, the last ``2 * 2^i`` inputs (``(kernel - 1) * dilation``) in the state: a forward
  over a chunk is the convolution of ``[buffer ; chunk]`` without padding, and the stateless
  forward is the same computation from an all-zero buffer (exactly Keras' causal zero padding).
* Output head of a causal LM: Anthe's decoder uses a separate dense vocabulary projection
  (``tie_embeddings=False`` here). With ``tie_embeddings=True`` the narrower table is reused as
  in the official ``projectoutput`` flag: ``logits = E (W h)``, ``W in R^{e x d}`` (:class:`TiedHead`).
* Patches: a pixel token ``t`` enters the patch vector either as its intensity ``t / (V - 1)`` in
  [0, 1] (``pixel="value"``, default: ViT's linear projection of flattened pixels, i.e. a
  ``Conv2d(1, d, p, stride=p)``), or as a learned ``pixel_dim``-vector per intensity, concatenated
  over the patch (``pixel="embed"``). Pixels inside a patch are flattened in raster order. The
  side is ``image_size`` or ``sqrt(L)`` (the tasks serialise square images in raster order); sides
  that are not multiples of ``p`` are zero-padded (token 0 = black) at the right and bottom. A
  patch is real when any of its pixels is (padding mask); the class token is always real.
"""

from __future__ import annotations

import inspect
import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

EMBEDDINGS = ("token", "hsoftpos", "patches")
PIXEL_MODES = ("value", "embed")


def anthe_sinusoidal(length: int, d: int, offset: int = 0, device=None, dtype=torch.float32) -> torch.Tensor:
    """Anthe's table ``[sin(p r_j) ; cos(p r_j)]``, ``r_j = 10000^(-j / (d/2))``: ``[L, d]``."""
    n_sin, n_cos = (d + 1) // 2, d // 2
    pos = torch.arange(offset, offset + length, device=device, dtype=torch.float64)[:, None]
    rates = 10000.0 ** (-torch.arange(n_sin, device=device, dtype=torch.float64) / (d / 2))
    ang = pos * rates  # [L, n_sin]
    return torch.cat([ang.sin(), ang[:, :n_cos].cos()], -1).to(dtype)


class SoftPOS(nn.Module):
    """``x -> [x ; softmax(x[..., :n]) S]``, ``S in R^{n x a}`` orthogonally initialised."""

    def __init__(self, n: int, add: int):
        super().__init__()
        self.n = n
        self.S = nn.Parameter(nn.init.orthogonal_(torch.empty(n, add)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, torch.softmax(x[..., : self.n], -1) @ self.S], -1)


class HSoftPOS(nn.Module):
    """H-SoftPOS embedding ``ids [B, L] -> [B, L, d_model]`` (see the module docstring)."""

    def __init__(self, vocab_size: int, d_model: int, *, levels: int = 2, kernel_size: int = 3):
        super().__init__()
        if not isinstance(levels, int) or isinstance(levels, bool) or levels < 1:
            raise ValueError(f"hsoftpos: levels must be a positive int, got {levels!r}")
        if not isinstance(kernel_size, int) or isinstance(kernel_size, bool) or kernel_size < 1:
            raise ValueError(f"hsoftpos: kernel_size must be a positive int, got {kernel_size!r}")
        local = d_model // (2 * levels)
        if local < 1:
            raise ValueError(
                f"hsoftpos: d_model={d_model} is too small for levels={levels} (needs d_model >= {2 * levels})"
            )
        self.d_model, self.levels, self.kernel_size = d_model, levels, kernel_size
        self.local_dim = local
        self.embed_dim = d_model - local * (2 * levels - 1)
        self.table = nn.Embedding(vocab_size, self.embed_dim)
        nn.init.normal_(self.table.weight, std=self.embed_dim**-0.5)
        self.convs = nn.ModuleList()
        for i in range(levels - 1):
            conv = nn.Conv1d(self.embed_dim if i == 0 else local, local, kernel_size, dilation=2**i)
            nn.init.xavier_uniform_(conv.weight)
            nn.init.zeros_(conv.bias)
            self.convs.append(conv)
        self.spos = nn.ModuleList(SoftPOS(local, local) for _ in range(levels))

    @property
    def num_embeddings(self) -> int:
        return self.table.num_embeddings

    def extra_repr(self) -> str:
        return f"levels={self.levels}, embed_dim={self.embed_dim}, local_dim={self.local_dim}"

    def receptive(self, i: int) -> int:
        """Past inputs convolution ``i`` needs: ``(kernel - 1) * 2^i``."""
        return (self.kernel_size - 1) * 2**i

    def init_state(self, batch_size: int, device=None, dtype=None) -> dict:
        """Zero buffers: the last ``receptive(i)`` inputs of each convolution, ``[B, r_i, C_in]``."""
        p = self.table.weight
        device, dtype = device or p.device, dtype or p.dtype
        return {
            "buf": [
                torch.zeros(batch_size, self.receptive(i), c.in_channels, device=device, dtype=dtype)
                for i, c in enumerate(self.convs)
            ]
        }

    def forward(self, ids: torch.Tensor, offset: int = 0, state: dict | None = None):
        """``ids [B, L]`` -> ``(x [B, L, d_model], new_state)``; ``state=None`` starts from zeros
        and returns no state."""
        B, L = ids.shape
        x = self.table(ids) * math.sqrt(self.embed_dim)
        x = x + anthe_sinusoidal(L, self.embed_dim, offset, ids.device, x.dtype)  # x_0 [B, L, e]
        bufs = state["buf"] if state is not None else self.init_state(B, ids.device, x.dtype)["buf"]
        outs, new_bufs = [self.spos[0](x)], []
        for i, conv in enumerate(self.convs):
            full = torch.cat([bufs[i].to(x.dtype), x], 1)  # [B, r_i + L, C_in]
            new_bufs.append(full[:, full.shape[1] - self.receptive(i) :])
            x = conv(full.transpose(1, 2)).transpose(1, 2)  # x_{i+1} [B, L, l]
            outs.append(self.spos[i + 1](x))
        return torch.cat(outs, -1), ({"buf": new_bufs} if state is not None else None)

    def tied_head(self, d_model: int) -> "TiedHead":
        return TiedHead(d_model, self.table)


class TiedHead(nn.Module):
    """Output logits through a narrower embedding table: ``logits = E (W h)``, ``W in R^{e x d}``."""

    def __init__(self, d_model: int, table: nn.Embedding):
        super().__init__()
        self.proj = nn.Linear(d_model, table.embedding_dim, bias=False)
        self.table = table

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return F.linear(self.proj(h), self.table.weight)


class PatchEmbedding(nn.Module):
    """ViT patch embedding of square images given as raster-order pixel tokens ``[B, side^2]``."""

    def __init__(
        self,
        vocab_size: int,
        d_model: int,
        *,
        patch_size: int = 4,
        cls_token: bool = True,
        pixel: str = "value",
        pixel_dim: int = 8,
        image_size: int | None = None,
    ):
        super().__init__()
        if not isinstance(patch_size, int) or isinstance(patch_size, bool) or patch_size < 1:
            raise ValueError(f"patches: patch_size must be a positive int, got {patch_size!r}")
        if pixel not in PIXEL_MODES:
            raise ValueError(f"patches: unknown pixel mode {pixel!r}; choose one of: {', '.join(PIXEL_MODES)}")
        if not isinstance(pixel_dim, int) or pixel_dim < 1:
            raise ValueError(f"patches: pixel_dim must be a positive int, got {pixel_dim!r}")
        if image_size is not None and (not isinstance(image_size, int) or image_size < 1):
            raise ValueError(f"patches: image_size must be a positive int or None, got {image_size!r}")
        self.vocab_size, self.patch_size, self.pixel, self.image_size = vocab_size, patch_size, pixel, image_size
        per_pixel = 1 if pixel == "value" else pixel_dim
        self.pixel_embed = nn.Embedding(vocab_size, pixel_dim) if pixel == "embed" else None
        self.proj = nn.Linear(patch_size * patch_size * per_pixel, d_model)
        self.cls = nn.Parameter(torch.randn(d_model) * 0.02) if cls_token else None

    @property
    def num_embeddings(self) -> int:
        return self.vocab_size

    def extra_repr(self) -> str:
        return f"patch_size={self.patch_size}, pixel={self.pixel!r}, cls_token={self.cls is not None}"

    def _side(self, L: int) -> int:
        side = self.image_size or math.isqrt(L)
        if side * side != L:
            raise ValueError(
                f"patches: a sequence of {L} pixels is not a {side}x{side} image "
                "(pass image_size, or feed square images in raster order)"
            )
        return side

    def _grid(self, t: torch.Tensor) -> torch.Tensor:
        """``t [B, L, C]`` (raster order) -> ``[B, n_patches, p*p*C]``, zero-padded to whole patches."""
        side, p = self._side(t.shape[1]), self.patch_size
        img = rearrange(t, "b (h w) c -> b c h w", h=side)
        pad = -side % p
        img = F.pad(img, (0, pad, 0, pad))
        return rearrange(img, "b c (gh p1) (gw p2) -> b (gh gw) (p1 p2 c)", p1=p, p2=p)

    def forward(self, ids: torch.Tensor, offset: int = 0, state: dict | None = None):
        if state is not None or offset:
            raise ValueError("patches: the patch embedding has no recurrent mode (no state, no offset)")
        dtype = self.proj.weight.dtype
        if self.pixel_embed is None:
            pix = (ids.to(dtype) / max(self.vocab_size - 1, 1))[..., None]  # [B, L, 1]
        else:
            pix = self.pixel_embed(ids)  # [B, L, pixel_dim]
        x = self.proj(self._grid(pix))  # [B, P, d_model]
        if self.cls is not None:
            x = torch.cat([self.cls.to(x.dtype).expand(x.shape[0], 1, -1), x], 1)
        return x, None

    def output_mask(self, mask: torch.Tensor | None) -> torch.Tensor | None:
        """Pixel mask ``[B, L]`` -> patch mask ``[B, P (+1)]``: a patch is real if any pixel is."""
        if mask is None:
            return None
        m = self._grid(mask[..., None].float()).amax(-1) > 0  # [B, P]
        if self.cls is not None:
            m = torch.cat([m.new_ones(m.shape[0], 1), m], 1)
        return m


def make_embedding(kind: str, vocab_size: int, d_model: int, **options) -> nn.Module:
    """The front-end named ``kind`` (one of :data:`EMBEDDINGS`)."""
    if kind == "token":
        if options:
            raise ValueError(f"embedding 'token' takes no options, got {sorted(options)}")
        return nn.Embedding(vocab_size, d_model)
    classes = {"hsoftpos": HSoftPOS, "patches": PatchEmbedding}
    if kind not in classes:
        raise ValueError(f"unknown embedding {kind!r}; choose one of: {', '.join(EMBEDDINGS)}")
    allowed = [
        k for k in inspect.signature(classes[kind].__init__).parameters if k not in ("self", "vocab_size", "d_model")
    ]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(f"embedding {kind!r} got unknown option(s) {unknown}; its options are: {', '.join(allowed)}")
    return classes[kind](vocab_size, d_model, **options)
