"""Worker side of ``longseq bench structured``: the model families (:data:`FAMILIES`, one
:class:`Family` each: how to build one training step) and :func:`measure_structured`, run in a
fresh benchmark worker. Apart from the driver (:mod:`.structured`) so that the worker imports
it without importing the driver's process launching."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

from ._measure import PeakMemory, _release_free_memory, _timed, summarize


@dataclass
class Family:
    """One model family: ``build_step(job, torch, device, dtype) -> (step_fn, n_params)`` returns a
    zero-argument callable doing one forward + backward on fixed random data; ``size_name`` names
    the swept size (states, nonterminals); ``sizes`` and ``ranks`` (``None`` = full rank) are the
    defaults; ``settings`` the family's other defaults (batch, length, vocabulary, ...)."""

    build_step: Callable
    size_name: str
    sizes: list[int]
    ranks: list[int | None]
    settings: dict = field(default_factory=dict)


def _hmm_step(job, torch, device, dtype):
    from longseq.structured import HMM

    s = job["settings"]
    hmm = HMM(job["size"], s["vocab_size"], rank=job["rank"], emb_dim=s["emb_dim"]).to(device=device, dtype=dtype)
    ids = torch.randint(s["vocab_size"], (s["batch"], s["length"]), device=device)
    params = list(hmm.parameters())

    def step():
        for p in params:
            p.grad = None
        loss = -hmm.log_likelihood(ids).mean()
        loss.backward()
        return loss.detach()

    return step, sum(p.numel() for p in params)


def _pcfg_step(job, torch, device, dtype):
    """One training step of the neural PCFG (full rank or TD-PCFG in rank space) on random sentences;
    ``size`` = nonterminals, preterminals = 2 x nonterminals (Yang, Zhao & Tu 2021's ratio)."""
    from longseq.structured import PCFG

    s = job["settings"]
    nt, L = job["size"], s["length"]
    pcfg = PCFG(nt, 2 * nt, s["vocab_size"], rank=job["rank"], emb_dim=s["emb_dim"], max_length=max(40, L))
    pcfg = pcfg.to(device=device, dtype=dtype)
    ids = torch.randint(s["vocab_size"], (s["batch"], L), device=device)
    lengths = torch.full((s["batch"],), L, device=device)
    params = list(pcfg.parameters())

    def step():
        for p in params:
            p.grad = None
        loss = -pcfg.log_likelihood(ids, lengths).mean()
        loss.backward()
        return loss.detach()

    return step, sum(p.numel() for p in params)


FAMILIES: dict[str, Family] = {
    "hmm": Family(
        _hmm_step,
        "num_states",
        sizes=[256, 512, 1024, 2048, 4096, 8192, 16384],
        ranks=[None, 256],
        settings={"batch": 4, "length": 64, "vocab_size": 256, "emb_dim": 128},
    ),
    "pcfg": Family(
        _pcfg_step,
        "num_nonterminals",
        sizes=[30, 60, 125, 250, 500],
        ranks=[None, 64],
        settings={"batch": 4, "length": 20, "vocab_size": 1000, "emb_dim": 256},
    ),
}


def measure_structured(job: dict, torch, device, dtype, sync) -> dict:
    """Worker side: time (``measure="time"``) or peak memory (``"memory"``) of one step."""

    step, n_params = FAMILIES[job["family"]].build_step(job, torch, device, dtype)
    out = {"status": "ok", "n_params": n_params}
    loss = step()  # warm-up (one-time allocations)
    out["finite"] = bool(torch.isfinite(loss))
    if job.get("measure", "time") == "memory":
        _release_free_memory()
        with PeakMemory(device) as m:
            step()
        out |= {"peak_mb": m.mb, "memory_method": m.method}
        return out
    sync()
    t0 = time.perf_counter()
    step()
    sync()
    first = time.perf_counter() - t0
    budget = job.get("time_budget")
    if budget and first > budget:
        out |= {"step_ms": summarize([first]), "over_time_budget": True}
        return out
    out["step_ms"] = summarize(_timed(step, sync, max(0, int(job.get("warmup", 1)) - 1), int(job.get("repeats", 3))))
    return out
