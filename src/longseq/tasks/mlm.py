"""Masked language modelling (MLM) tasks: ``mlm_text`` (KJV), ``mlm_dict`` (GCIDE), ``mlm_code`` (stdlib).

Kind ``"mlm"``, byte-level: ids 0-255 are bytes and id 256 is ``[MASK]`` (vocabulary
:data:`MLM_VOCAB` = 257). A batch is ``inputs`` (the window with some bytes replaced), ``targets``
(the original byte at every *selected* position, ``IGNORE`` everywhere else) and ``mask`` (True =
real byte; only the last evaluation window has padding).

Where masking lives
-------------------
Masking is a batch transform on the data side (:class:`MaskedSplit` wraps a
:class:`longseq.tasks.lm.ByteWindowSplit`), not a step inside the model: data flows task ->
batches -> model -> trainer, so the model (:class:`longseq.models.MaskedLM`) sees ordinary
``(inputs, mask)`` and the trainer's loss and metrics need nothing new (the cross-entropy over the
non-``IGNORE`` targets is the MLM loss). Masks are drawn "on the fly" at batch time, never stored,
and every window's mask is a pure function of ``(seed, split, window index)`` (a numpy Philox
generator keyed by them): any batch can be rebuilt from its indices, so runs resume bit-exactly,
and two builds with one seed agree. Train windows sit at seeded pseudo-random offsets
(``ByteWindowSplit``), so the masks seen over training differ from window to window; a repeated
window index (a later epoch) gets the same mask (static per index, as BERT's pre-generated
duplicates are static per copy).

BERT masking (Devlin et al. 2019, sec. 3.1 and appendix A.1; ``create_pretraining_data.py`` of the
official code): per window, ``n = max(1, round(mask_rate * maskable))`` positions are chosen
uniformly without replacement (the official code's rounded count, at least one, rather than a
Bernoulli draw per position: every sequence contributes to the loss); each chosen position is
replaced by ``[MASK]`` with probability 0.8, by a uniformly random byte with probability 0.1
(it may equal the original, as in BERT) and left unchanged with probability 0.1. Padding
positions (``mask`` False) and the ids in ``special_ids`` are never chosen and labels exist only
at chosen positions.

Span masking (``span=True``; SpanBERT, Joshi et al. 2020, sec. 3.1): span lengths are drawn from
Geometric(p = 0.2) clipped at ``max_span`` (10), each span starts at a uniform maskable position,
spans are added until ``n`` positions are covered (the last span cut to fit), and the 80/10/10
decision is made per span (all its bytes are masked, replaced or kept together) as in the paper.
Positions already taken are skipped, so a span may be cut short by padding or specials.

Corpora and splits are those of the other real-text tasks: ``mlm_code`` = ``lm_code``'s stdlib
bytes (files split 90/5/5 by sha1 of the path), ``mlm_dict`` = ``lm_dict``'s GCIDE (contiguous
90/5/5), ``mlm_text`` = the ``bible -f`` export of the King James Bible (the ``text`` task's
source) split contiguously 90/5/5 (the books in canonical order: the test bytes are the end of
Revelation; the MLM's train bytes overlap the ``text`` task's chapters, which is what pre-training
on the in-domain corpus means: the labels are never seen). Lengths up to 4,096 (preset ``full``).
"""

from __future__ import annotations

import numpy as np
import torch

from .base import IGNORE, Split, Task, TaskMeta, register_task, resolve_preset

MASK_ID = 256
MLM_VOCAB = 257
_SPLIT_SALT = {"train": 0x6D6C6D74, "validation": 0x6D6C6D76, "test": 0x6D6C6D65}


def _check_rates(mask_rate: float, mask_prob: float, random_prob: float) -> None:
    if not 0.0 < mask_rate <= 1.0:
        raise ValueError(f"mask_rate must lie in (0, 1], got {mask_rate!r}")
    if mask_prob < 0 or random_prob < 0 or mask_prob + random_prob > 1.0:
        raise ValueError(
            f"mask_prob and random_prob must be >= 0 with a sum <= 1 (the rest is kept), "
            f"got {mask_prob!r} and {random_prob!r}"
        )


def mask_row(
    ids: np.ndarray,
    maskable: np.ndarray,
    rng: np.random.Generator,
    *,
    mask_rate: float = 0.15,
    mask_prob: float = 0.8,
    random_prob: float = 0.1,
    span: bool = False,
    span_p: float = 0.2,
    max_span: int = 10,
    mask_id: int = MASK_ID,
    num_random: int = 256,
) -> tuple[np.ndarray, np.ndarray]:
    """BERT (or SpanBERT) masking of one sequence.

    ``ids``: int64 ``[L]``; ``maskable``: bool ``[L]`` (False at padding and special tokens).
    Returns ``(inputs [L], targets [L])``: targets hold the original id at the selected positions
    and ``IGNORE`` elsewhere. Draws come from ``rng`` only (deterministic given its state)."""
    L = ids.shape[0]
    inputs, targets = ids.copy(), np.full(L, IGNORE, dtype=np.int64)
    cand = np.flatnonzero(maskable)
    if cand.size == 0:
        return inputs, targets
    n = min(cand.size, max(1, int(round(mask_rate * cand.size))))
    if not span:
        chosen = rng.choice(cand, size=n, replace=False)  # [n]
        groups = [chosen[i : i + 1] for i in range(n)]
    else:
        taken = np.zeros(L, dtype=bool)
        groups, covered, tries = [], 0, 0
        while covered < n and tries < 100 * L:
            tries += 1
            length = min(int(rng.geometric(span_p)), max_span, n - covered)
            start = int(rng.choice(cand))
            pos = np.arange(start, min(L, start + length))
            pos = pos[maskable[pos] & ~taken[pos]]
            if pos.size == 0:
                continue
            taken[pos] = True
            groups.append(pos)
            covered += pos.size
    u = rng.random(len(groups))  # one decision per group
    for g, r in zip(groups, u):
        targets[g] = ids[g]
        if r < mask_prob:
            inputs[g] = mask_id
        elif r < mask_prob + random_prob:
            inputs[g] = rng.integers(0, num_random, size=g.size)
    return inputs, targets


class MaskedSplit(Split):
    """MLM view of a token split: ``batch(index)`` masks the base split's windows on the fly.

    ``base.batch(index)`` must give ``inputs`` ``[B, L]`` (and, for an LM window split, ``targets``
    whose ``IGNORE`` entries mark padding); the mask of window ``i`` is drawn from
    ``np.random.default_rng([seed, salt, i])``. Its batches carry ``mask`` only when some position
    is padding, so its examples (``split[i]``, the Dataset protocol) always carry one (``item_mask``)."""

    item_mask = True

    def __init__(
        self,
        base: Split,
        *,
        seed: int,
        salt: int,
        mask_rate: float = 0.15,
        mask_prob: float = 0.8,
        random_prob: float = 0.1,
        span: bool = False,
        max_span: int = 10,
        special_ids: tuple[int, ...] = (),
    ):
        _check_rates(mask_rate, mask_prob, random_prob)
        if not isinstance(max_span, int) or max_span < 1:
            raise ValueError(f"max_span must be a positive int, got {max_span!r}")
        self.base, self.seed, self.salt = base, int(seed), int(salt)
        self.opts = dict(
            mask_rate=mask_rate, mask_prob=mask_prob, random_prob=random_prob, span=span, max_span=max_span
        )
        self.special_ids = tuple(int(s) for s in special_ids)
        self.mask = None

    def __len__(self) -> int:
        return len(self.base)

    @property
    def seq_len(self) -> int:
        return self.base.seq_len

    @property
    def lengths(self) -> np.ndarray:
        """Real (unpadded) bytes per window (``longseq data stats``)."""
        return self.base.lengths

    @property
    def targets(self) -> "_LazyMLMTargets":
        """Sliceable view of the masked targets (``split.targets[i:j]`` -> ``[j-i, L]``)."""
        return _LazyMLMTargets(self)

    def batch(self, index) -> dict[str, torch.Tensor]:
        if isinstance(index, torch.Tensor):
            index = index.cpu().numpy()
        index = np.atleast_1d(np.asarray(index, dtype=np.int64))
        b = self.base.batch(index)
        ids = b["inputs"].numpy()  # [B, L]
        real = b["mask"].numpy() if "mask" in b else (b["targets"].numpy() != IGNORE)
        maskable = real & ~np.isin(ids, self.special_ids) if self.special_ids else real.copy()
        inputs, targets = np.empty_like(ids), np.empty_like(ids)
        for r, i in enumerate(index):
            rng = np.random.default_rng([self.seed, self.salt, int(i)])
            inputs[r], targets[r] = mask_row(ids[r], maskable[r], rng, **self.opts)
        out = {"inputs": torch.from_numpy(inputs), "targets": torch.from_numpy(targets)}
        if not real.all():
            out["mask"] = torch.from_numpy(real)
        return out

    def fingerprint(self, n: int = 16) -> str:
        import hashlib

        b = self.batch(np.arange(min(n, len(self))))
        h = hashlib.sha256()
        for k in ("inputs", "targets"):
            h.update(np.ascontiguousarray(b[k].numpy()).tobytes())
        return h.hexdigest()


class _LazyMLMTargets:
    def __init__(self, split: MaskedSplit):
        self.split = split

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, key) -> torch.Tensor:
        index = np.arange(len(self.split))[key]
        out = self.split.batch(np.atleast_1d(index))["targets"]
        return out[0] if np.ndim(index) == 0 else out


class _EvalWindows(Split):
    """``ByteWindowSplit`` evaluation windows with the padding as a ``mask`` (MLM reads no
    next-byte targets)."""

    def __init__(self, base):
        self.base, self.seq_len, self.mask = base, base.seq_len, None

    def __len__(self) -> int:
        return len(self.base)

    @property
    def lengths(self) -> np.ndarray:
        return self.base.lengths

    def batch(self, index) -> dict[str, torch.Tensor]:
        b = self.base.batch(index)
        return {"inputs": b["inputs"], "targets": b["targets"], "mask": b["targets"] != IGNORE}


# --------------------------------------------------------------------------------------------
_MLM_PRESETS = {
    "quick": dict(seq_len=256, train_windows=20_000, max_train_bytes=4_000_000, max_eval_bytes=131_072),
    "lra": dict(seq_len=1024, train_windows=100_000, max_train_bytes=None, max_eval_bytes=None),
    "full": dict(seq_len=4096, train_windows=100_000, max_train_bytes=None, max_eval_bytes=None),
}
_MASKING = dict(mask_rate=0.15, mask_prob=0.8, random_prob=0.1, span=False, max_span=10)
_MLM_MODEL = {
    "quick": dict(d_model=64, n_layers=2, num_heads=2),
    "lra": dict(d_model=256, n_layers=4, num_heads=4),
    "full": dict(d_model=512, n_layers=8, num_heads=8),
}
_MLM_TRAIN = {
    "quick": dict(steps=600, batch_size=32, lr=2e-3, warmup=50, weight_decay=0.01),
    "lra": dict(steps=20_000, batch_size=32, lr=1e-3, warmup=1000, weight_decay=0.01),
    "full": dict(steps=50_000, batch_size=16, lr=6e-4, warmup=2000, weight_decay=0.01),
}
_MAX_LEN = 4096


def _mlm_task(
    name: str, corpus: dict[str, np.ndarray], cfg: dict, preset: str, seed: int, description: str, extra: dict
) -> Task:
    from .lm import ByteWindowSplit

    L = int(cfg["seq_len"])
    if not 1 <= L <= _MAX_LEN:
        raise ValueError(f"{name}: seq_len must lie in [1, {_MAX_LEN}], got {cfg['seq_len']!r}")
    if int(cfg["train_windows"]) < 1:
        raise ValueError(f"{name}: train_windows must be >= 1, got {cfg['train_windows']!r}")
    masking = {k: cfg[k] for k in _MASKING}
    masking["span"] = bool(masking["span"])
    splits = {}
    for s in ("train", "validation", "test"):
        data = corpus[s]
        cap = cfg["max_train_bytes"] if s == "train" else cfg["max_eval_bytes"]
        data = data if cap is None else data[: int(cap)]
        base = (
            ByteWindowSplit(data, L, windows=int(cfg["train_windows"]), seed=seed)
            if s == "train"
            else _EvalWindows(ByteWindowSplit(data, L))
        )
        splits[s] = MaskedSplit(base, seed=seed, salt=_SPLIT_SALT[s], **masking)
    extra = dict(extra, config=cfg, mask_id=MASK_ID, split_bytes={k: int(len(v)) for k, v in corpus.items()})
    meta = TaskMeta(
        name, "mlm", MLM_VOCAB, L, metric="masked_bpb", preset=preset, seed=seed, description=description, extra=extra
    )
    return Task(
        meta,
        splits["train"],
        splits["validation"],
        splits["test"],
        dict(_MLM_MODEL.get(preset, _MLM_MODEL["lra"])),
        dict(_MLM_TRAIN.get(preset, _MLM_TRAIN["lra"])),
    )


def _presets(**source) -> dict[str, dict]:
    return {k: dict(v, **_MASKING, **source) for k, v in _MLM_PRESETS.items()}


MLM_TEXT_PRESETS = _presets(source=None)
MLM_DICT_PRESETS = _presets(path=None)
MLM_CODE_PRESETS = _presets(root=None, include_tests=True)


@register_task("mlm_text")
def build_mlm_text(preset: str = "quick", seed: int = 0, **overrides) -> Task:
    import hashlib

    from .cache import cached, source_fingerprint
    from .lm import contiguous_split
    from .text import export_kjv, parse_chapters

    cfg = resolve_preset("mlm_text", MLM_TEXT_PRESETS, preset, overrides)
    export = export_kjv(cfg["source"])
    fp = hashlib.sha256(export).hexdigest()

    def corpus_bytes():  # the chapters' text (verse references dropped, as in the `text` task)
        text = b"\n\n".join(t for _, _, t in parse_chapters(export))
        return contiguous_split(np.frombuffer(text, dtype=np.uint8).copy())

    corpus = cached("mlm_text", "all", 0, {"source": fp}, corpus_bytes, source=source_fingerprint(__file__) + fp)
    return _mlm_task(
        "mlm_text",
        corpus,
        cfg,
        preset,
        seed,
        "byte-level masked LM on the King James Bible (contiguous 90/5/5)",
        {"source_fingerprint": fp},
    )


@register_task("mlm_dict")
def build_mlm_dict(preset: str = "quick", seed: int = 0, **overrides) -> Task:
    from .lm import build_lm_dict

    cfg = resolve_preset("mlm_dict", MLM_DICT_PRESETS, preset, overrides)
    lm = build_lm_dict("full", seed, path=cfg["path"], max_train_bytes=None, max_eval_bytes=None)
    corpus = {s: getattr(lm, s).data for s in ("train", "validation", "test")}
    return _mlm_task(
        "mlm_dict",
        corpus,
        cfg,
        preset,
        seed,
        "byte-level masked LM on GCIDE (contiguous 90/5/5)",
        {"source": lm.meta.extra["source"]},
    )


@register_task("mlm_code")
def build_mlm_code(preset: str = "quick", seed: int = 0, **overrides) -> Task:
    from .lm import build_lm_code

    cfg = resolve_preset("mlm_code", MLM_CODE_PRESETS, preset, overrides)
    lm = build_lm_code(
        "full", seed, root=cfg["root"], include_tests=cfg["include_tests"], max_train_bytes=None, max_eval_bytes=None
    )
    corpus = {s: getattr(lm, s).data for s in ("train", "validation", "test")}
    return _mlm_task(
        "mlm_code",
        corpus,
        cfg,
        preset,
        seed,
        "byte-level masked LM on the CPython standard library (files split 90/5/5 by sha1 of path)",
        {"corpus_fingerprint": lm.meta.extra["corpus_fingerprint"]},
    )


def expected_masked(n_maskable: int, mask_rate: float = 0.15) -> int:
    """Positions BERT masking selects in a sequence with ``n_maskable`` maskable positions."""
    return 0 if n_maskable == 0 else min(n_maskable, max(1, int(round(mask_rate * n_maskable))))


__all__ = ["MASK_ID", "MLM_VOCAB", "MaskedSplit", "mask_row", "expected_masked"]
