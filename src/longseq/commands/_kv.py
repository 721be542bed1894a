"""``KEY=VALUE`` flags shared by the subcommands (``--task-option``, ``--mixer-option``, ...): the
bottom of :mod:`longseq.commands`: subcommand modules import it, it imports no subcommand."""

from __future__ import annotations


def parse_kv(items: list[str] | None, what: str) -> dict:
    """``["window=64", "rope=true"]`` -> ``{"window": 64, "rope": True}`` (values parsed as JSON when possible)."""
    from ..models.config import parse_value  # at call time: the CLI starts without importing torch

    out = {}
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"{what} must look like KEY=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        out[k] = parse_value(v)
    return out


def per_name(items: list[str] | None, what: str) -> dict[str, dict]:
    """``["mqar.seq_len=24", "local.window=32"]`` -> ``{"mqar": {"seq_len": 24}, "local": {"window": 32}}``."""
    out: dict[str, dict] = {}
    for k, v in parse_kv(items, what).items():
        name, dot, key = k.partition(".")
        if not dot or not name or not key:
            raise ValueError(f"{what} must look like NAME.KEY=VALUE, got {k}={v!r}")
        out.setdefault(name, {})[key] = v
    return out


def parse_mixer(text: str | None):
    """``--mixer``: a name (every layer), or a stack ``'s4d(d_state=64)*3,softmax(rope=true)'``
    (one entry per layer: :func:`longseq.models.config.parse_layers`)."""
    from ..models.config import parse_layers

    if text is None:
        return None
    if any(c in text for c in ",(*"):
        return parse_layers(text)
    return text.strip()
