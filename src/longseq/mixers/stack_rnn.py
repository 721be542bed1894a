"""Stack RNNs as causal mixers: ``lstm``, ``superposition_stack``, ``ns_rnn``, ``rns_rnn``.

All four are the models of DuSell & Chiang's papers ("Learning Context-Free Languages with
Nondeterministic Stack RNNs", CoNLL 2020; "Learning Hierarchical Structures with Differentiable
Nondeterministic Stacks", ICLR 2022): an LSTM controller that, at every step ``t``, reads the
input ``x_t`` together with the stack reading ``r_t`` and whose hidden state drives the stack
(official code ``stack_rnn_models/common.py``):

    r_0 = reading of the initial stack;  for t ≥ 1: stack_t = update(stack_{t-1}, actions(h_{t-1})), r_t = reading(stack_t)
    (h_t, c_t) = LSTM([x_t ; r_t], (h_{t-1}, c_{t-1}))                   y_t = W_o h_t      # [B, d_model]

* ``lstm``: the controller alone (no stack), the papers' LSTM baseline.
* ``superposition_stack``: Joulin & Mikolov 2015 (:mod:`longseq.ops.stack.superposition`), reading
  = top element (``stack_size`` units).
* ``ns_rnn``: the nondeterministic stack (:mod:`longseq.ops.stack.lang`) with ``normalize=True``: the
  2020 NS-RNN, transition weights are a softmax per (state, top) and the reading is the
  distribution over the top symbol ``Γ``.
* ``rns_rnn``: the same class with ``normalize=False``: the 2022 renormalising RNS-RNN, weights
  ``exp(logits)`` and the reading over (state, top) pairs ``Q × Γ``.

Options: ``hidden_size`` (controller units; default ``d_model``; the papers use 20),
``num_states`` |Q| and ``stack_symbols`` |Γ| (defaults 2 and 3, the papers' CFL setting [MEM]),
``normalize``, ``state_reading`` (default ``not normalize``) and ``window=D`` (the limited
stack of the 2022 paper, sec. 5: O(n·D²) and a state of O(D²) carried across chunks; ``None`` =
the full O(n³) stack, whose state grows as O(n²)). The output ``y_t`` is a linear map of
``h_t``; in :class:`~longseq.models.CausalLM` the embedding, the residual and the tied head
surround it (the paper's model is embedding -> controller -> softmax layer: build with
``n_layers=1, ffn="none"`` to be close to it).

Decisions: every parameter is initialised uniformly in [-0.1, 0.1] (the official
``--init-scale 0.1``); the stack tables are computed in float64 whatever the input dtype (the
readings are cast back); the step's action weights are rescaled as :mod:`longseq.ops.stack.lang`
documents (the official code instead runs in the log semiring).
"""

from __future__ import annotations

import torch
from torch import nn

from ..ops.stack.lang import LangStack, scale_actions
from ..ops.stack.superposition import superposition_update
from .base import Mixer, register

_PAPER_2020 = "DuSell & Chiang 2020, Learning Context-Free Languages with Nondeterministic Stack RNNs"
_PAPER_2022 = "DuSell & Chiang 2022, Learning Hierarchical Structures with Differentiable Nondeterministic Stacks"


class _ControllerRNN(Mixer):
    """LSTM controller; subclasses add a stack through :meth:`_reading_size`, :meth:`_init_stack`,
    :meth:`_advance` (stack update + reading)."""

    def __init__(self, d_model: int, *, num_heads: int = 1, causal: bool = True, hidden_size: int | None = None):
        super().__init__(d_model, num_heads=num_heads, causal=causal)
        if not causal:
            raise ValueError(f"{type(self).__name__} is causal only")
        H = self.hidden_size = int(hidden_size or d_model)
        if H < 1:
            raise ValueError(f"hidden_size must be >= 1, got {hidden_size}")
        self.cell = nn.LSTMCell(d_model + self._reading_size(), H)
        self.out = nn.Linear(H, d_model)

    def _init_params(self) -> None:
        for p in self.parameters():
            nn.init.uniform_(p, -0.1, 0.1)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, hidden_size={self.hidden_size}"

    # ---------------------------------------------------------------- stack hooks (none here)
    def _reading_size(self) -> int:
        return 0

    def _init_stack(self, batch, device, dtype):
        return None

    def _advance(self, stack, h):
        """``(new stack, reading [B, R])`` for this step; ``h`` is the previous hidden state."""
        return None, h.new_zeros(h.shape[0], 0)

    def _initial_reading(self, stack, batch, device, dtype):
        return torch.zeros(batch, 0, device=device, dtype=dtype)

    # ---------------------------------------------------------------- mixer contract
    def _init_state(self, batch_size, device, dtype) -> dict:
        H = self.hidden_size
        z = torch.zeros(batch_size, H, device=device, dtype=dtype)
        return {"h": z, "c": z.clone(), "t": 0, "stack": self._init_stack(batch_size, device, dtype)}

    def _forward(self, x, mask, state, return_state):
        B, L, _ = x.shape
        if state is None:
            state = self._init_state(B, x.device, x.dtype)
        h, c, t, stack = state["h"], state["c"], state["t"], state["stack"]
        ys = []
        for s in range(L):
            if t == 0:
                r = self._initial_reading(stack, B, x.device, x.dtype)
            else:
                stack, r = self._advance(stack, h)
            h, c = self.cell(torch.cat([x[:, s], r.to(x.dtype)], dim=-1), (h, c))
            ys.append(h)
            t += 1
        y = self.out(torch.stack(ys, dim=1))  # [B, L, d_model]
        return y, ({"h": h, "c": c, "t": t, "stack": stack} if return_state else None)

    def state_size(self, seq_len: int) -> int:
        return 2 * self.hidden_size


@register(
    "lstm",
    family="recurrent",
    paper="Hochreiter & Schmidhuber 1997, Long Short-Term Memory (the stack-RNN papers' baseline)",
    complexity="O(N)",
    causal=True,
    bidirectional=False,
    step=True,
    heads=False,
)
class LSTMMixer(_ControllerRNN):
    """The stack RNNs' controller alone: ``y_t = W_o h_t`` with ``(h_t, c_t) = LSTM(x_t, ...)``."""

    def __init__(self, d_model: int, *, num_heads: int = 1, causal: bool = True, hidden_size: int | None = None):
        super().__init__(d_model, num_heads=num_heads, causal=causal, hidden_size=hidden_size)
        self._init_params()


@register(
    "superposition_stack",
    family="stack RNN",
    paper="Joulin & Mikolov 2015, Inferring Algorithmic Patterns with Stack-Augmented Recurrent Nets",
    complexity="O(N^2)",
    causal=True,
    bidirectional=False,
    step=True,
    heads=False,
)
class SuperpositionStackRNN(_ControllerRNN):
    """LSTM + superposition stack of ``stack_size``-dimensional elements (:mod:`longseq.ops.stack.superposition`)."""

    def __init__(
        self,
        d_model: int,
        *,
        num_heads: int = 1,
        causal: bool = True,
        hidden_size: int | None = None,
        stack_size: int = 10,
    ):
        if stack_size < 1:
            raise ValueError(f"stack_size must be >= 1, got {stack_size}")
        self.stack_size = int(stack_size)
        super().__init__(d_model, num_heads=num_heads, causal=causal, hidden_size=hidden_size)
        self.actions = nn.Linear(self.hidden_size, 3)  # push, pop, no-op
        self.push_value = nn.Linear(self.hidden_size, self.stack_size)
        self._init_params()

    def _reading_size(self) -> int:
        return self.stack_size

    def _init_stack(self, batch, device, dtype):
        return torch.zeros(batch, self.stack_size, 0, device=device, dtype=dtype)  # [B, m, height]

    def _initial_reading(self, stack, batch, device, dtype):
        return torch.zeros(batch, self.stack_size, device=device, dtype=dtype)

    def _advance(self, stack, h):
        a = torch.softmax(self.actions(h), dim=-1)  # [B, 3]
        v = torch.sigmoid(self.push_value(h))  # [B, m]
        stack = superposition_update(stack.to(h.dtype), a[:, 0], a[:, 1], a[:, 2], v)
        return stack, stack[:, :, 0]

    def state_size(self, seq_len: int) -> int:
        return 2 * self.hidden_size + self.stack_size * seq_len


@register(
    "ns_rnn",
    family="stack RNN",
    paper=_PAPER_2020 + "; " + _PAPER_2022,
    complexity="O(N^3) (window D: O(N·D^2))",
    causal=True,
    bidirectional=False,
    step=True,
    heads=False,
)
class NondeterministicStackRNN(_ControllerRNN):
    """LSTM + nondeterministic stack (Lang's algorithm, :mod:`longseq.ops.stack.lang`).

    The controller's hidden state gives the logits of all ``|Q||Γ|(2|Q||Γ| + |Q|)`` transitions
    (one linear layer, as the official ``operation_layer``); ``normalize`` picks the NS-RNN
    (softmax per (state, top)) or the RNS-RNN (``exp``) weights."""

    _normalize_default = True

    def __init__(
        self,
        d_model: int,
        *,
        num_heads: int = 1,
        causal: bool = True,
        hidden_size: int | None = None,
        num_states: int = 2,
        stack_symbols: int = 3,
        normalize: bool | None = None,
        state_reading: bool | None = None,
        window: int | None = None,
    ):
        if num_states < 1 or stack_symbols < 1:
            raise ValueError(f"num_states and stack_symbols must be >= 1, got {num_states}, {stack_symbols}")
        if window is not None and (not isinstance(window, int) or window < 1):
            raise ValueError(f"window must be a positive integer or None (full stack), got {window!r}")
        self.Q, self.S = int(num_states), int(stack_symbols)
        self.normalize = self._normalize_default if normalize is None else bool(normalize)
        self.state_reading = (not self.normalize) if state_reading is None else bool(state_reading)
        self.window = window
        super().__init__(d_model, num_heads=num_heads, causal=causal, hidden_size=hidden_size)
        N = self.Q * self.S
        self.actions = nn.Linear(self.hidden_size, N * (2 * N + self.Q))
        self._init_params()

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, Q={self.Q}, S={self.S}, normalize={self.normalize}, "
            f"state_reading={self.state_reading}, window={self.window}"
        )

    def _reading_size(self) -> int:
        return self.Q * self.S if self.state_reading else self.S

    def _init_stack(self, batch, device, dtype):
        return LangStack.initial(batch, self.Q, self.S, self.window, device=device, dtype=torch.float64)

    def _initial_reading(self, stack, batch, device, dtype):
        return stack.reading(self.state_reading)

    def action_weights(self, h: torch.Tensor):
        """``push, repl [B, N, N]``, ``pop [B, N, Q]`` (float64) from hidden states ``h [B, H]``."""
        Q, S = self.Q, self.S
        N = Q * S
        logits = self.actions(h).to(torch.float64).view(-1, N, 2 * N + Q)
        push, repl, pop = logits.split([N, N, Q], dim=-1)
        B = h.shape[0]
        return scale_actions(
            push.reshape(B, Q, S, Q, S), repl.reshape(B, Q, S, Q, S), pop.reshape(B, Q, S, Q), self.normalize
        )

    def _advance(self, stack, h):
        stack = stack.update(*self.action_weights(h))
        return stack, stack.reading(self.state_reading)

    def state_size(self, seq_len: int) -> int:
        N = self.Q * self.S
        n = seq_len if self.window is None else min(seq_len, self.window)
        return 2 * self.hidden_size + n * (n + 1) // 2 * N * N + (n + 2) * N


@register(
    "rns_rnn",
    family="stack RNN",
    paper=_PAPER_2022,
    complexity="O(N^3) (window D: O(N·D^2))",
    causal=True,
    bidirectional=False,
    step=True,
    heads=False,
)
class RenormalizingNSRNN(NondeterministicStackRNN):
    """The RNS-RNN: :class:`NondeterministicStackRNN` with ``normalize=False`` by default
    (unnormalised positive weights, reading over PDA states and top symbols)."""

    _normalize_default = False
