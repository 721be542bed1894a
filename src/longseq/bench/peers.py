"""Peer implementations a user would otherwise install, behind the mixer shape contract.

Each peer is wrapped in a small adapter, ``[B, L, d_model] -> [B, L, d_model]`` with its own
input and output projections like a longseq mixer, built with the same ``d_model``, number of
heads and head size as its longseq *twin*, and with the twin's size setting (random features,
projected length, landmarks, window) read from the twin's registered default (or from the
options the user gives the twin), so that both do the same amount of work. Peers whose package
is not installed are skipped with a note (``pip install longseq[peers]``).

Peers are named after their pip package; each maps to its twin as follows (the adapter's own
projections are bias-free where the package allows, eval mode, no dropout):

* ``torch-sdpa`` -> ``softmax``: ``F.scaled_dot_product_attention`` between a fused qkv and an
  output Linear (what one writes with plain torch); no setting.
* ``performer-pytorch`` -> ``performer``: ``performer_pytorch.SelfAttention`` (FAVOR+ softmax
  kernel, orthogonal features); ``nb_features`` = the twin's ``num_features`` (both default to
  d_h ln d_h). Causal mode without the package's CUDA kernel runs its chunked CPU fallback.
  Its causal mode is not strictly causal: the key features are stabilised by the max over all
  keys, future ones included, which with the kernel's additive epsilon leaks a little of the
  future into past outputs (measured: 2e-4 for a +1 shift of later inputs, 0.3 for +100).
* ``linformer`` -> ``linformer``: ``linformer.LinformerSelfAttention``; ``k`` = the twin's
  ``k``, ``seq_len`` = L (the twin's ``max_len`` is set to L too); E, F shared across heads
  (the twin's "headwise" sharing). Bidirectional only.
* ``nystrom-attention`` -> ``nystromformer`` (when registered, else compared with ``softmax``
  only): ``nystrom_attention.NystromAttention``, ``num_landmarks`` from the twin or 256, the
  package's defaults otherwise (6 pseudo-inverse iterations, depthwise-conv skip of kernel 33).
  Bidirectional only.
* ``local-attention`` -> ``local``: ``local_attention.LocalMHA`` with ``window_size`` = the
  twin's ``window`` and the package's exact windows: causal, the last ``window`` tokens
  (blocks of ``window`` looking one block back); bidirectional, one block back and one ahead.
* ``pytorch-fast-transformers`` -> ``linear``: ``AttentionLayer`` over ``CausalLinearAttention``
  (causal) or ``LinearAttention``, feature map elu(x)+1 as the twin; no setting.
"""

from __future__ import annotations

from .peer_modules import PEER_PACKAGES, PEERS, Peer, available_peers, build
from .speed import SpeedConfig, Target, mixer_targets, run_targets

__all__ = ["PEERS", "Peer", "available_peers", "build", "peer_targets", "run_peers", "PEER_PACKAGES"]


# ---------------------------------------------------------------------------- targets
def _twin_setting(p: Peer, twin_options: dict) -> tuple[dict, str]:
    """The peer's size option mapped from its twin, and a sentence saying where it came from."""
    if p.setting is None:
        return {}, ""
    from .. import mixers

    given = dict(twin_options)
    defaults = mixers.spec(p.twin).cls.options() if p.twin in mixers.names() else {}
    for key in p.twin_options:
        for source, where in ((given, "given to"), (defaults, "default of")):
            if key not in source:
                continue
            if source[key] is None:  # the twin uses its own default rule, as the package does
                return {}, f"{p.setting}: package default ({key}=None {where} {p.twin})"
            return {p.setting: source[key]}, f"{p.setting}={source[key]} ({key} {where} {p.twin})"
    if p.default is None:
        return {}, f"{p.setting}: package default ({p.twin} not registered or without a matching option)"
    return {p.setting: p.default}, f"{p.setting}={p.default} (fallback; {p.twin} has no matching option)"


def _twin_flops_options(p: Peer, given: dict) -> dict:
    """The twin's options (defaults overridden by the user's) for evaluating its FLOPs formula."""
    from .. import mixers

    defaults = mixers.spec(p.twin).cls.options() if p.twin in mixers.names() else {}
    return defaults | dict(given)


def peer_targets(peer_names: list[str] | None, causal: bool, twin_options: dict | None = None) -> list[Target]:
    """Targets for peers (``None`` = all), each with its twin's setting and FLOPs; missing -> skipped."""
    from .. import mixers

    twin_options = twin_options or {}
    peer_names = list(PEERS) if peer_names is None else peer_names
    unknown = [n for n in peer_names if n not in PEERS]
    if unknown:
        raise ValueError(f"unknown peer(s) {unknown}; peers: {', '.join(PEERS)}")
    avail = available_peers()
    registered = set(mixers.names())
    targets = []
    for n in peer_names:
        p = PEERS[n]
        opts, mapping = _twin_setting(p, twin_options.get(p.twin, {}))
        flops = mixers.spec(p.twin).flops if p.twin in registered else None
        skip = avail[n]
        if skip is None and causal and not p.causal:
            skip = "no causal mode (bidirectional only)"
        note = "; ".join(s for s in (p.note, mapping) if s)
        targets.append(
            Target(
                n,
                "peer",
                opts,
                twin=p.twin,
                flops=flops,
                skip_reason=skip,
                note=note,
                twin_options=_twin_flops_options(p, twin_options.get(p.twin, {})),
            )
        )
    return targets


def run_peers(
    peer_names: list[str] | None = None,
    config: SpeedConfig | None = None,
    *,
    twin_options: dict | None = None,
    twins: bool = True,
    log=None,
    on_update=None,
) -> dict:
    """Benchmark peers next to their longseq twins (those registered) and ``softmax``."""
    from .. import mixers

    cfg = config or SpeedConfig()
    peer = peer_targets(peer_names, cfg.causal, twin_options)
    names = []
    if twins:
        registered = set(mixers.names())
        names = list(dict.fromkeys(["softmax"] + [t.twin for t in peer if t.twin in registered]))
    own = mixer_targets(names, cfg.causal, {k: v for k, v in (twin_options or {}).items() if k in names})
    return run_targets(own + peer, cfg, kind="peers", log=log, on_update=on_update)
