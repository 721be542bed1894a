"""The token-mixer contract and its registry.

Every method in longseq is a :class:`Mixer`: an ``nn.Module`` mapping ``[B, L, d_model]`` to
``[B, L, d_model]``, built by name through :func:`build`. A mixer class declares what it can do
in its :class:`MixerSpec` (given to :func:`register`) and implements one method, ``_forward``;
the base class validates inputs, applies padding masks and provides ``step`` on top of the
stateful forward, so that every mixer behaves the same way at the edges.

    @register("my_mixer", family="linear attention", paper="...", complexity="O(N)",
              causal=True, bidirectional=True, step=True)   # + capabilities: heads, uses_carry, ...
    class MyMixer(Mixer):
        def __init__(self, d_model, *, num_heads=1, causal=False, my_option=3): ...
        def _forward(self, x, mask, state, return_state): ...   # -> (y, new_state | None)

Conventions shared by all mixers
--------------------------------
* ``mask``: optional bool ``[B, L]``, True = real token. Padded positions never change the output
  at real positions; the base class zeroes the input there before ``_forward`` and zeroes the
  output there after it. Mixers that attend must also exclude padded keys.
* ``state``: opaque per-sequence recurrent state (a dict of tensors). ``forward(x, state=s,
  return_state=True)`` continues a sequence; ``step`` is that with L = 1 unless a mixer overrides
  it. A state passed to ``step``/``forward`` may be updated in place (KV caches grow in place):
  do not reuse it afterwards; copy it first if you need to branch.
"""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

import torch
from torch import nn

from .._discover import import_submodules

__all__ = [
    "Mixer",
    "MixerSpec",
    "register",
    "names",
    "spec",
    "build",
    "heads_for",
    "set_debug",
    "debug_enabled",
    "RENAMED_OPTIONS",
]

_DEBUG = os.environ.get("LONGSEQ_DEBUG", "") not in ("", "0", "false", "False")


def set_debug(enabled: bool = True) -> None:
    """Turn on input checks that cost a device sync (NaN/inf detection in every mixer input)."""
    global _DEBUG
    _DEBUG = bool(enabled)


def debug_enabled() -> bool:
    return _DEBUG


@dataclass(frozen=True)
class MixerSpec:
    """What a registered mixer is and can do."""

    name: str
    family: str
    paper: str
    complexity: str
    causal: bool
    bidirectional: bool
    step: bool
    # A mixer that brings its own feed-forward (FLASH's GAU) tells the block builder to omit the FFN.
    has_ffn: bool = False
    # flops(seq_len, d_model, num_heads, causal) -> forward FLOPs per sequence (for benchmarks).
    flops: Callable[..., float] | None = field(default=None, compare=False, repr=False)
    cls: type | None = field(default=None, compare=False, repr=False)
    # Declared capabilities (read from the spec, never from module attributes by name):
    # heads: the mixer splits d_model into num_heads attention heads. Mixers without heads (the SSMs,
    #   FLASH's single-head GAU) refuse num_heads != 1 in build(); models pass the model's num_heads
    #   only to layers whose mixer has heads.
    heads: bool = True
    # uses_carry: forward/step take a ``carry`` dict shared with the neighbouring layers of the same
    #   kind (evolving attention passes its logits); see models/backbone.py.
    uses_carry: bool = False
    # max_len_option: the constructor option bounding the sequence length (learned length-dependent
    #   parameters: Linformer's projections, E-SPA's kernels), or None for unbounded mixers.
    max_len_option: str | None = None
    # aux_loss: the mixer exposes an auxiliary loss tensor ``aux_loss`` after each forward, which the
    #   trainer adds to the loss (no registered mixer does today; MoE feed-forwards do, see nn/moe.py).
    aux_loss: bool = False
    # renamed: {old option name: current name} for options renamed since models were saved with them.
    renamed: dict[str, str] = field(default_factory=dict, compare=False, repr=False)


_REGISTRY: dict[str, MixerSpec] = {}
# {mixer name: {old option name: current name}}: filled by register(renamed=...), read by build() (to
# name the new option in its error) and by models.config.upgrade_options (to load old saved configs).
RENAMED_OPTIONS: dict[str, dict[str, str]] = {}


def register(
    name: str,
    *,
    family: str,
    paper: str,
    complexity: str,
    causal: bool,
    bidirectional: bool,
    step: bool,
    has_ffn: bool = False,
    flops: Callable[..., float] | None = None,
    heads: bool = True,
    uses_carry: bool = False,
    max_len_option: str | None = None,
    aux_loss: bool = False,
    renamed: dict[str, str] | None = None,
):
    """Class decorator: register a :class:`Mixer` subclass under ``name`` (capabilities: see
    :class:`MixerSpec`)."""

    def deco(cls):
        if not (isinstance(cls, type) and issubclass(cls, Mixer)):
            raise TypeError(f"@register({name!r}) must decorate a subclass of longseq.mixers.Mixer")
        if name in _REGISTRY and _REGISTRY[name].cls is not cls:
            raise ValueError(f"mixer name {name!r} is already registered by {_REGISTRY[name].cls}")
        if step and not causal:
            raise ValueError(f"mixer {name!r}: step=True requires causal=True")
        if max_len_option is not None and max_len_option not in cls.options():
            raise ValueError(f"mixer {name!r}: max_len_option={max_len_option!r} is not one of its options")
        s = MixerSpec(
            name,
            family,
            paper,
            complexity,
            causal,
            bidirectional,
            step,
            has_ffn,
            flops,
            cls,
            heads=heads,
            uses_carry=uses_carry,
            max_len_option=max_len_option,
            aux_loss=aux_loss,
            renamed=dict(renamed or {}),
        )
        _REGISTRY[name] = s
        if renamed:
            RENAMED_OPTIONS[name] = dict(renamed)
        cls.spec = s
        return cls

    return deco


def _discover() -> None:
    """Import every module of ``longseq.mixers`` once, so their @register decorators run."""
    import_submodules("longseq.mixers")


def names() -> list[str]:
    """Sorted names of all registered mixers."""
    _discover()
    return sorted(_REGISTRY)


def spec(name: str) -> MixerSpec:
    """The :class:`MixerSpec` of a registered mixer; ``ValueError`` listing the names if unknown."""
    _discover()
    if name not in _REGISTRY:
        raise ValueError(f"unknown mixer {name!r}; available mixers: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def build(name: str, d_model: int, *, num_heads: int = 1, causal: bool = False, **options) -> "Mixer":
    """Build a registered mixer: ``build("softmax", 256, num_heads=4, causal=True, rope=True)``."""
    s = spec(name)
    if causal and not s.causal:
        raise ValueError(f"mixer {name!r} has no causal mode (it is bidirectional only)")
    if not causal and not s.bidirectional:
        raise ValueError(f"mixer {name!r} has no bidirectional mode: build it with causal=True")
    if not isinstance(d_model, int) or d_model <= 0:
        raise ValueError(f"d_model must be a positive int, got {d_model!r}")
    if not isinstance(num_heads, int) or num_heads <= 0:
        raise ValueError(f"num_heads must be a positive int, got {num_heads!r}")
    if not s.heads and num_heads != 1:
        raise ValueError(
            f"mixer {name!r} has no attention heads (num_heads is not used): leave num_heads at 1, got {num_heads}"
        )
    allowed = s.cls.options()
    old = sorted(k for k in options if k in s.renamed)
    if old:
        raise ValueError(
            f"mixer {name!r}: option(s) renamed: " + ", ".join(f"{k!r} is now {s.renamed[k]!r}" for k in old)
        )
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(
            f"mixer {name!r} got unknown option(s) {unknown}; its options are: "
            + (", ".join(f"{k}={v!r}" for k, v in allowed.items()) or "(none)")
        )
    for k, v in options.items():
        _check_option(name, k, v, allowed[k])
    return s.cls(d_model, num_heads=num_heads, causal=causal, **options)


def heads_for(name: str, num_heads: int) -> int:
    """``num_heads`` for a mixer with attention heads, 1 for one without (``MixerSpec.heads``)."""
    return num_heads if spec(name).heads else 1


def _check_option(mixer: str, key: str, value: Any, default: Any) -> None:
    """Option values of the wrong kind are refused here (a mixer checks ranges and choices itself):
    an option whose default is a bool takes only True/False (``rope=maybe`` is not true); a number
    default takes a number (or None, which several options use for "off"); a string default a string."""
    if isinstance(default, bool):
        ok = isinstance(value, bool)
        what = "true or false"
    elif isinstance(default, (int, float)):
        ok = value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))
        what = "a number"
    elif isinstance(default, str):
        ok = value is None or isinstance(value, str)
        what = "a string"
    else:
        return
    if not ok:
        raise ValueError(f"mixer {mixer!r} option {key} must be {what}, got {value!r}")


class Mixer(nn.Module):
    """Base class of all token mixers. See the module docstring for the contract."""

    spec: ClassVar[MixerSpec]

    def __init__(self, d_model: int, *, num_heads: int = 1, causal: bool = False):
        super().__init__()
        if d_model % num_heads != 0:
            raise ValueError(f"d_model={d_model} is not divisible by num_heads={num_heads}")
        self.d_model = d_model
        self.num_heads = num_heads
        self.head_dim = d_model // num_heads
        self.causal = causal
        # Longest sequence the mixer accepts (None = unbounded); mixers with learned
        # length-dependent parameters (Linformer) set it.
        self.max_len: int | None = None

    # ------------------------------------------------------------------ introspection
    @classmethod
    def options(cls) -> dict[str, Any]:
        """Keyword options of this mixer (beyond d_model, num_heads, causal) with their defaults."""
        sig = inspect.signature(cls.__init__)
        return {
            k: p.default
            for k, p in sig.parameters.items()
            if k not in ("self", "d_model", "num_heads", "causal")
            and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
        }

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, num_heads={self.num_heads}, causal={self.causal}"

    # ------------------------------------------------------------------ public API
    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None = None,
        *,
        state: dict | None = None,
        return_state: bool = False,
    ):
        """``x: [B, L, d_model] -> [B, L, d_model]``; with ``return_state`` also the new state."""
        self._check_input(x, mask)
        stateful = state is not None or return_state
        if stateful:
            self._require_step("forward(state=...)/return_state")
            if mask is not None:
                raise ValueError(
                    "a padding mask cannot be combined with a recurrent state; "
                    "run each sequence unpadded, or without state"
                )
            if state is None:
                state = self.init_state(x.shape[0], device=x.device, dtype=x.dtype)
        if x.shape[0] == 0:  # an empty batch: an empty output (and the state as given)
            y = x * 0  # [0, L, d_model], on the autograd graph of x
            return (y, state) if return_state else y
        if mask is not None:
            x = x * mask.unsqueeze(-1).to(x.dtype)
        y, new_state = self._forward(x, mask, state, return_state)
        if mask is not None:
            y = y * mask.unsqueeze(-1).to(y.dtype)
        return (y, new_state) if return_state else y

    def step(self, x_t: torch.Tensor, state: dict):
        """One token: ``x_t: [B, d_model]`` -> ``(y_t: [B, d_model], state)``."""
        self._require_step("step")
        if x_t.dim() != 2 or x_t.shape[-1] != self.d_model:
            raise ValueError(f"step expects x_t of shape [batch, {self.d_model}], got {tuple(x_t.shape)}")
        if _DEBUG:
            _check_finite(x_t, "step input")
        return self._step(x_t, state)

    def init_state(self, batch_size: int, device=None, dtype=None) -> dict:
        """Empty recurrent state (or KV cache) for ``batch_size`` sequences."""
        self._require_step("init_state")
        p = next(self.parameters(), None)
        device = device if device is not None else (p.device if p is not None else None)
        dtype = dtype if dtype is not None else (p.dtype if p is not None else torch.get_default_dtype())
        return self._init_state(batch_size, device, dtype)

    def state_size(self, seq_len: int) -> int:
        """Floats of recurrent state (or KV cache) held per sequence after ``seq_len`` tokens."""
        raise NotImplementedError(f"{type(self).__name__} does not report a state size")

    # ------------------------------------------------------------------ to implement
    def _forward(self, x, mask, state, return_state):
        """Return ``(y, new_state)``; ``new_state`` may be None when not ``return_state``."""
        raise NotImplementedError

    def _init_state(self, batch_size, device, dtype) -> dict:
        raise NotImplementedError

    def _step(self, x_t, state):
        y, state = self._forward(x_t.unsqueeze(1), None, state, True)
        return y.squeeze(1), state

    # ------------------------------------------------------------------ checks
    def _require_step(self, what: str) -> None:
        if not self.spec.step:
            raise ValueError(f"mixer {self.spec.name!r} has no recurrent mode ({what} is unsupported)")
        if not self.causal:
            raise ValueError(f"{what} needs a causal mixer: build {self.spec.name!r} with causal=True")

    def _param_dtype(self) -> torch.dtype | None:
        """dtype of the first real floating-point parameter (complex SSM parameters do not count)."""
        for p in self.parameters():
            if p.is_floating_point():
                return p.dtype
        return None

    def _check_input(self, x: torch.Tensor, mask: torch.Tensor | None) -> None:
        if not isinstance(x, torch.Tensor) or x.dim() != 3:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"{self.spec.name}: expected x of shape [batch, length, d_model], got {shape}")
        if x.shape[-1] != self.d_model:
            raise ValueError(f"{self.spec.name}: expected last dim d_model={self.d_model}, got {x.shape[-1]}")
        if x.shape[1] == 0:
            raise ValueError(f"{self.spec.name}: empty sequence (length 0)")
        if not x.is_floating_point():
            raise ValueError(f"{self.spec.name}: x must be a floating-point tensor, got {x.dtype}")
        p_dtype = self._param_dtype()
        if p_dtype is not None and x.dtype != p_dtype and not torch.is_autocast_enabled(x.device.type):
            raise ValueError(
                f"{self.spec.name}: input dtype {x.dtype} does not match the parameters' dtype "
                f"{p_dtype}; convert the input (x.to({p_dtype})) or the module (.to({x.dtype}))"
            )
        if self.max_len is not None and x.shape[1] > self.max_len:
            raise ValueError(f"{self.spec.name}: sequence length {x.shape[1]} exceeds max_len={self.max_len}")
        if mask is not None:
            if mask.dtype != torch.bool or mask.shape != x.shape[:2]:
                raise ValueError(
                    f"{self.spec.name}: mask must be bool of shape {tuple(x.shape[:2])} (True = real token),"
                    f" got {mask.dtype} {tuple(mask.shape)}"
                )
        if _DEBUG:
            _check_finite(x, "input")


def _check_finite(x: torch.Tensor, what: str) -> None:
    if not torch.isfinite(x).all():
        n_nan = int(torch.isnan(x).sum())
        n_inf = int(torch.isinf(x).sum())
        raise ValueError(f"non-finite values in mixer {what}: {n_nan} NaN, {n_inf} inf")
