"""Autoregressive decoding speed: prompt prefill time and tokens/s of ``step`` per mixer.

For each mixer a small ``longseq.models.CausalLM`` (random weights; speed does not depend on
them) prefills a random prompt of ``prompt`` tokens into its recurrent state / KV cache with one
stateful forward, then greedily decodes ``new`` tokens one ``model.step`` at a time. Each mixer
runs in a fresh process (:mod:`longseq.bench._worker`) after a short warm-up (a 16-token prefill
and 4 steps). Reported: prefill ms, decode tokens/s (batch x new / decode time), the median
ms per step and the mean over the first and the last tenth of the steps (a growing KV cache makes
late steps slower; a fixed-size recurrent state does not), and the peak extra memory of the
whole generation. A mixer without a recurrent step reports its prefill (a plain forward) only.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass

from ._worker import measure_generation
from .speed import SCHEMA, machine_info, run_job

__all__ = ["GenerateConfig", "run_generate", "measure_generation"]


@dataclass
class GenerateConfig:
    prompt: int = 1024
    new: int = 1024
    batch: int = 1
    d_model: int = 256
    heads: int = 4
    n_layers: int = 2
    vocab_size: int = 256
    dtype: str = "float32"
    threads: int | None = None
    device: str = "auto"
    seed: int = 0
    timeout: float | None = 600.0  # seconds per mixer (one worker)
    isolate: bool = True  # False: in this process (tests), see SpeedConfig.isolate

    def __post_init__(self):
        for name in ("prompt", "batch", "d_model", "heads", "n_layers", "vocab_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if self.new < 0:
            raise ValueError(f"new must be >= 0, got {self.new!r}")
        if self.d_model % self.heads:
            raise ValueError(f"d_model={self.d_model} is not divisible by heads={self.heads}")

    def resolved_device(self) -> str:
        if self.device != "auto":
            return self.device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"


def run_generate(
    mixer_names: list[str] | None = None,
    config: GenerateConfig | None = None,
    *,
    options: dict | None = None,
    log=None,
    on_update=None,
) -> dict:
    """Prefill and decoding speed of each causal mixer (``None`` = all registered) in a fresh process."""
    from .. import mixers

    cfg = config or GenerateConfig()
    log = log or logging.getLogger(__name__).info  # the CLI shows INFO on stderr
    options = options or {}
    try:
        import longseq.models  # noqa: F401
    except ImportError as e:
        raise ValueError(f"longseq bench generate needs longseq.models.CausalLM, which is unavailable: {e}") from e
    names = mixers.names() if mixer_names is None else list(dict.fromkeys(mixer_names))
    device = cfg.resolved_device()
    res = {
        "schema": SCHEMA,
        "kind": "generate",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "config": asdict(cfg) | {"device": device},
        "machine": machine_info(device, cfg.threads),
        "targets": [],
        "rows": [],
    }
    base = {k: v for k, v in asdict(cfg).items() if k not in ("timeout", "device", "isolate")}
    for n in names:
        s = mixers.spec(n)
        row = {"name": n, "source": "mixer", "prompt": cfg.prompt, "new": cfg.new, "options": options.get(n, {})}
        res["targets"].append({"name": n, "source": "mixer", "options": row["options"]})
        if not s.causal:
            row |= {"status": "skipped", "reason": "no causal mode: cannot generate"}
        else:
            job = base | {"kind": "generate", "name": n, "device": device, "options": row["options"]}
            row |= run_job(job, cfg.timeout, cfg.isolate)
        res["rows"].append(row)
        log(_progress_line(row))
        if on_update:
            on_update(res)
    return res


def _progress_line(r: dict) -> str:
    if r["status"] != "ok":
        return f"  {r['name']:<22} {r['status']}: {r.get('reason') or r.get('error', '')}"
    tps = f"{r['tokens_per_s']:9.1f} tok/s" if r.get("tokens_per_s") else "   (no step)"
    return f"  {r['name']:<22} prefill {r['prefill_ms']:9.1f} ms  decode {tps}"
