"""One model configuration: :class:`ModelConfig` with a :class:`LayerSpec` per layer.

A model is fully described by a :class:`ModelConfig`: the vocabulary, width and head, the settings
shared by every block (norm, feed-forward, positions, embedding, dropout) and one
:class:`LayerSpec` per layer (its mixer, that mixer's own options, and optional per-layer
``num_heads`` / ``causal`` / feed-forward overrides, as mamba's per-layer-kind configs do for
hybrid stacks). ``CausalLM`` and ``SequenceClassifier`` build themselves from one
(``ModelConfig.build()`` or ``CausalLM.from_config``); their keyword constructors stay as a
shorthand and store the resolved configuration in ``model.model_config``. ``model.config`` is its
dict form (what ``config.json`` holds and what ``cls(**model.config)`` rebuilds from).

Two ways to state the layers:

* shorthand (keywords of the constructors): ``mixer="s4d"`` or ``mixer=["s4d", "softmax"]`` (a name
  or ``{"name": ..., **options}`` per layer) and ``mixer_options`` shared by the layers. In a
  stack of different mixers a shared option goes to every layer whose mixer has it (as
  ``position="rope"`` reaches only the layers that accept ``rope``); an option that no layer's
  mixer has is an error. Options given per layer must all be that mixer's.
* explicit: ``layers=[LayerSpec("s4d", {"d_state": 64}), LayerSpec("softmax", {"rope": True})]``
  (or the same as dicts ``{"mixer": "s4d", "options": {...}}``).

On the command line a stack is one string (:func:`parse_layers`):
``--mixer 's4d(d_state=64)*3,softmax(rope=true)'``: comma-separated layers, each a mixer name
with optional ``(KEY=VALUE, ...)`` options (values parsed as JSON when they parse, ``true`` /
``false`` as booleans, otherwise strings) and an optional ``*N`` repeat.

Saved models: ``config.json`` holds ``{"class", "schema": 2, "config": ModelConfig dict,
"weights_sha256"}``. Folders written before the schema field existed (``config`` = the
constructor keywords with ``mixer`` / ``mixer_options``) still load; option names that were
renamed since (see :data:`longseq.mixers.base.RENAMED_OPTIONS`) are mapped to the new names with a
``FutureWarning`` naming both (:func:`upgrade_options`).
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from .. import mixers
from ..mixers.base import RENAMED_OPTIONS

KINDS = ("lm", "classifier", "mlm")
SCHEMA = 3
"""Version of the saved ``config.json``: 1 (no ``schema`` key) = constructor keywords with the old option
names; 2 = ModelConfig's dict; 3 = the same, written after a default changed (:data:`CHANGED_DEFAULTS`)."""

# Option defaults changed at a schema bump, {schema: {mixer: {option: the old default}}}: a config of an
# older schema gets the old value written in, so a saved model keeps computing the function it was
# trained as. Schema 3: h3's discretisation became the official code's bilinear (it was ZOH).
CHANGED_DEFAULTS: dict[int, dict[str, dict[str, Any]]] = {3: {"h3": {"disc": "zoh"}}}
# {kind: model class}: filled by the model modules (causal_lm.py: "lm", classifier.py: "classifier"),
# so that this module needs no import of them (they import it).
MODEL_KINDS: dict[str, type] = {}


@dataclass
class LayerSpec:
    """One layer: its mixer, that mixer's options, and optional overrides of model settings.

    ``None`` in ``causal``, ``num_heads``, ``ffn``, ``ffn_mult``, ``ffn_options`` means "the model's
    setting" (``causal=None`` in a classifier: bidirectional where the mixer allows it)."""

    mixer: str
    options: dict[str, Any] = field(default_factory=dict)
    causal: bool | None = None
    num_heads: int | None = None
    ffn: str | None = None
    ffn_mult: float | None = None
    ffn_options: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"mixer": self.mixer, "options": dict(self.options)}
        for k in ("causal", "num_heads", "ffn", "ffn_mult", "ffn_options"):
            if getattr(self, k) is not None:
                d[k] = getattr(self, k)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, where: str = "layer") -> LayerSpec:
        """``{"mixer": name, "options": {...}, ...}`` or the shorthand ``{"name": name, **options}``."""
        if not isinstance(d, dict):
            raise ValueError(f"{where}: a layer must be a mixer name, a dict or a LayerSpec, got {d!r}")
        if "mixer" in d:
            allowed = {f.name for f in fields(cls)}
            unknown = sorted(set(d) - allowed)
            if unknown:
                raise ValueError(f"{where}: unknown layer key(s) {unknown}; a layer has: {', '.join(sorted(allowed))}")
            return cls(**{**d, "options": dict(d.get("options") or {})})
        if "name" in d:
            return cls(d["name"], {k: v for k, v in d.items() if k != "name"})
        raise ValueError(f"{where}: a layer dict needs a 'mixer' (or shorthand 'name') key, got {d!r}")


def _as_layer(e: Any, i: int) -> LayerSpec:
    if isinstance(e, LayerSpec):
        return LayerSpec(**{**e.__dict__, "options": dict(e.options)})
    if isinstance(e, str):
        return LayerSpec(e)
    return LayerSpec.from_dict(e, where=f"layer {i}")


def resolve_layers(
    mixer: Any = "softmax", n_layers: int | None = 2, mixer_options: dict | None = None, layers: list | None = None
) -> list[LayerSpec]:
    """The per-layer specs of the shorthand (``mixer``, ``n_layers``, ``mixer_options``) or of
    ``layers``, with the shared ``mixer_options`` distributed (see the module docstring)."""
    if layers is not None:
        if mixer_options:
            raise ValueError("give either layers=[...] (each with its own options) or mixer_options, not both")
        entries = list(layers)
        if n_layers is not None and len(entries) != n_layers:
            raise ValueError(f"layers has {len(entries)} entries but n_layers={n_layers}")
    elif isinstance(mixer, (list, tuple)):
        entries = list(mixer)
        if n_layers is not None and len(entries) != n_layers:
            raise ValueError(f"mixer list has {len(entries)} entries but n_layers={n_layers}")
    else:
        if not isinstance(n_layers, int) or isinstance(n_layers, bool) or n_layers < 1:
            raise ValueError(f"n_layers must be a positive int, got {n_layers!r}")
        entries = [mixer] * n_layers
    if not entries:
        raise ValueError("a model needs at least one layer")
    specs = [_as_layer(e, i) for i, e in enumerate(entries)]
    for s in specs:
        mixers.spec(s.mixer)  # unknown names fail here, listing the registry
    shared = dict(mixer_options or {})
    if shared:
        accepts = [set(mixers.spec(s.mixer).cls.options()) | set(RENAMED_OPTIONS.get(s.mixer, {})) for s in specs]
        for k in shared:
            if not any(k in a for a in accepts):
                # no layer has it: let the first layer's mixer report it (lists its options)
                mixers.build(specs[0].mixer, 8, causal=mixers.spec(specs[0].mixer).causal, **{k: shared[k]})
        for s, a in zip(specs, accepts):
            s.options = {**{k: v for k, v in shared.items() if k in a}, **s.options}
    return specs


@dataclass
class ModelConfig:
    """Everything needed to build a longseq model (``kind`` ``lm``: :class:`CausalLM`,
    ``classifier``: :class:`SequenceClassifier`, ``mlm``: :class:`MaskedLM`). See the module docstring."""

    vocab_size: int
    d_model: int = 128
    layers: list[LayerSpec] = field(default_factory=lambda: [LayerSpec("softmax"), LayerSpec("softmax")])
    kind: str = "lm"
    num_classes: int | None = None
    num_heads: int = 1
    norm: str = "layernorm"
    ffn: str = "mlp"
    ffn_mult: float = 4.0
    ffn_options: dict[str, Any] | None = None
    dropout: float = 0.0
    position: str = "none"
    position_options: dict[str, Any] | None = None
    max_len: int | None = None
    embedding: str = "token"
    embedding_options: dict[str, Any] | None = None
    shortcuts: bool = True
    scale_invariant: bool = False
    tie_embeddings: bool = True  # lm only
    causal: bool | None = None  # classifier only (an lm is causal)
    pooling: str = "mean"  # classifier only
    pair: bool = False  # classifier only

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown model kind {self.kind!r}; choose one of: {', '.join(KINDS)}")
        if self.kind == "classifier" and not (isinstance(self.num_classes, int) and self.num_classes >= 2):
            raise ValueError(f"a classifier needs num_classes >= 2, got {self.num_classes!r}")
        self.layers = [_as_layer(e, i) for i, e in enumerate(self.layers)]
        if not self.layers:
            raise ValueError("a model needs at least one layer")

    @property
    def n_layers(self) -> int:
        return len(self.layers)

    # ---------------------------------------------------------------- dict form
    def to_dict(self) -> dict[str, Any]:
        """Constructor keywords of the model class (JSON-serialisable): what ``config.json`` stores.
        Settings that do not apply to ``kind`` are left out."""
        d: dict[str, Any] = {"vocab_size": self.vocab_size}
        if self.kind == "classifier":
            d["num_classes"] = self.num_classes
        d.update(d_model=self.d_model, n_layers=self.n_layers, layers=[s.to_dict() for s in self.layers])
        skip = {"vocab_size", "num_classes", "d_model", "layers", "kind"}
        skip |= {
            "lm": {"causal", "pooling", "pair"},
            "classifier": {"tie_embeddings"},
            "mlm": {"causal", "pooling", "pair", "tie_embeddings"},
        }[self.kind]
        for f in fields(self):
            if f.name not in skip:
                d[f.name] = getattr(self, f.name)
        return d

    def to_json(self) -> str:
        return json.dumps({"kind": self.kind, **self.to_dict()}, indent=2)

    @classmethod
    def from_dict(cls, d: dict[str, Any], kind: str | None = None) -> ModelConfig:
        """Inverse of :meth:`to_dict` (``kind`` from the argument, the dict, or ``num_classes``);
        also accepts the shorthand keywords (``mixer``, ``mixer_options``, ``n_layers``)."""
        d = dict(d)
        kind = kind or d.pop("kind", None) or ("classifier" if d.get("num_classes") is not None else "lm")
        d.pop("kind", None)
        mixer, n_layers, layers = d.pop("mixer", "softmax"), d.pop("n_layers", None), d.pop("layers", None)
        if layers is not None and mixer not in ("softmax", None):
            raise ValueError("give either layers=[...] or mixer=..., not both")
        if n_layers is None and layers is None and not isinstance(mixer, (list, tuple)):
            n_layers = 2
        layers = resolve_layers(mixer, n_layers, d.pop("mixer_options", None), layers)
        allowed = {f.name for f in fields(cls)} - {"layers", "kind"}
        unknown = sorted(set(d) - allowed)
        if unknown:
            raise ValueError(f"unknown model setting(s) {unknown}; a model config has: {', '.join(sorted(allowed))}")
        return cls(layers=layers, kind=kind, **d)

    @classmethod
    def from_json(cls, text: str) -> ModelConfig:
        return cls.from_dict(json.loads(text))

    def build(self):
        """The model this configuration describes (the class registered for ``kind``)."""
        if self.kind not in MODEL_KINDS:
            raise ValueError(f"no model class registered for kind {self.kind!r} (import longseq.models)")
        return MODEL_KINDS[self.kind].from_config(self)


def read_model_config(path: str | os.PathLike) -> dict[str, Any]:
    """The configuration dict in ``path``: a saved model directory (its ``config.json``), a
    ``config.json`` written by ``model.save`` (``{"class", "schema", "config", ...}``), or a plain
    :meth:`ModelConfig.to_json` / :meth:`ModelConfig.to_dict` file. Old option names are mapped."""
    p = Path(path)
    if p.is_dir():
        p = p / "config.json"
    try:
        data = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"cannot read a model configuration from {p}: {e}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{p}: a model configuration is a JSON object, got {type(data).__name__}")
    if "config" in data and "class" in data:  # written by model.save
        kind = {"CausalLM": "lm", "SequenceClassifier": "classifier", "MaskedLM": "mlm"}.get(data["class"])
        old, schema = "schema" not in data, data.get("schema", 1)
        data = dict(data["config"])
        if kind:
            data.setdefault("kind", kind)
        if old:
            data = upgrade_options(data, source=str(p))
        data = pin_old_defaults(data, schema)
    return data


def upgrade_options(config: dict[str, Any], source: str = "config") -> dict[str, Any]:
    """Map option names renamed since a config was written (``RENAMED_OPTIONS``) to the new names,
    with a ``FutureWarning`` naming each. Works on both the shorthand and the ``layers`` form."""
    config = dict(config)
    notes: list[str] = []
    mixers.names()  # registers every mixer (and its renamed options)

    def fix(name: str, opts: dict | None) -> dict | None:
        if not opts:
            return opts
        table = RENAMED_OPTIONS.get(name, {})
        out = {}
        for k, v in opts.items():
            if k in table:
                notes.append(f"{name}: {k!r} -> {table[k]!r}")
                k = table[k]
            out[k] = v
        return out

    if config.get("layers") is not None:
        config["layers"] = [
            {**e, "options": fix(e["mixer"], e.get("options"))} if isinstance(e, dict) and "mixer" in e else e
            for e in config["layers"]
        ]
    mixer = config.get("mixer")
    if isinstance(mixer, (list, tuple)):
        config["mixer"] = [
            {"name": e["name"], **fix(e["name"], {k: v for k, v in e.items() if k != "name"})}
            if isinstance(e, dict) and "name" in e
            else e
            for e in mixer
        ]
    if config.get("mixer_options"):
        names = [
            e if isinstance(e, str) else e.get("name")
            for e in (mixer if isinstance(mixer, (list, tuple)) else [mixer or "softmax"])
        ]
        shared = dict(config["mixer_options"])
        for n in names:
            if isinstance(n, str):
                shared = fix(n, shared)
        config["mixer_options"] = shared
    if notes:
        warnings.warn(
            f"{source}: renamed mixer option(s) mapped to the current names ({'; '.join(sorted(set(notes)))}); "
            "save the model again to store the new names",
            FutureWarning,
            stacklevel=3,
        )
    return config


def pin_old_defaults(config: dict[str, Any], schema: int) -> dict[str, Any]:
    """Write the old default of every option whose default changed after ``schema`` into the layers
    that use it (:data:`CHANGED_DEFAULTS`), in the ``layers`` and the shorthand forms."""
    config = dict(config)
    pins: dict[str, dict[str, Any]] = {}
    for version, table in sorted(CHANGED_DEFAULTS.items()):
        if schema < version:
            for name, opts in table.items():
                pins.setdefault(name, {}).update(opts)
    if not pins:
        return config
    if config.get("layers") is not None:
        config["layers"] = [
            {**e, "options": {**pins.get(e["mixer"], {}), **(e.get("options") or {})}}
            if isinstance(e, dict) and "mixer" in e
            else e
            for e in config["layers"]
        ]
        return config
    mixer = config.get("mixer") or "softmax"
    if isinstance(mixer, str) and mixer in pins:
        config["mixer_options"] = {**pins[mixer], **(config.get("mixer_options") or {})}
    elif isinstance(mixer, (list, tuple)):
        config["mixer"] = [
            {"name": e, **pins[e]}
            if isinstance(e, str) and e in pins
            else {**pins.get(e.get("name"), {}), **e}
            if isinstance(e, dict)
            else e
            for e in mixer
        ]
    return config


# ---------------------------------------------------------------- the command-line syntax
def _split_top(text: str, sep: str = ",") -> list[str]:
    """Split at ``sep`` outside (), [], {} and quotes."""
    out, depth, cur, quote = [], 0, [], None
    for ch in text:
        if quote:
            cur.append(ch)
            if ch == quote:
                quote = None
            continue
        if ch in "\"'":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
            if depth < 0:
                raise ValueError(f"unbalanced brackets in {text!r}")
        if ch == sep and depth == 0:
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    if depth or quote:
        raise ValueError(f"unbalanced brackets or quotes in {text!r}")
    out.append("".join(cur))
    return out


def parse_value(v: str) -> Any:
    """A command-line value: JSON when it parses, ``true``/``false`` as booleans, else the string."""
    try:
        return json.loads(v)
    except json.JSONDecodeError:
        return {"true": True, "false": False}.get(v.lower(), v)


def parse_layers(text: str) -> list[LayerSpec]:
    """``'s4d(d_state=64)*3,softmax(rope=true)'`` -> 4 :class:`LayerSpec` (see the module docstring)."""
    specs: list[LayerSpec] = []
    for part in _split_top(text.strip()):
        part = part.strip()
        if not part:
            raise ValueError(f"empty layer in --mixer {text!r}")
        repeat = 1
        head, star, count = part.rpartition("*")
        if star and ")" not in count:
            if not count.strip().isdigit() or int(count) < 1:
                raise ValueError(f"layer {part!r}: the repeat after '*' must be a positive integer")
            part, repeat = head.strip(), int(count)
        opts: dict[str, Any] = {}
        if "(" in part:
            if not part.endswith(")"):
                raise ValueError(f"layer {part!r}: options go in parentheses at the end: NAME(KEY=VALUE,...)")
            name, body = part[:-1].split("(", 1)
            for item in _split_top(body):
                item = item.strip()
                if not item:
                    continue
                if "=" not in item:
                    raise ValueError(f"layer {part!r}: options must look like KEY=VALUE, got {item!r}")
                k, v = item.split("=", 1)
                opts[k.strip()] = parse_value(v.strip())
        else:
            name = part
        name = name.strip()
        if not name:
            raise ValueError(f"layer {part!r}: missing mixer name")
        specs.extend(LayerSpec(name, dict(opts)) for _ in range(repeat))
    return specs
