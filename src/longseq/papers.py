"""The papers behind the registered mixers, as BibTeX (``papers.bib``, shipped as package data).

``MIXER_PAPERS`` maps each registered mixer name to the keys of its papers in ``papers.bib`` (the
first key is the paper the mixer implements; later keys are the papers its spec's ``paper`` string
also credits: kernels, variants, the paper that uses it as a baseline). ``longseq info MIXER`` prints
the spec and these entries. ``parse_bib`` is a small parser for the subset of BibTeX the file uses
(``@type{key, field = {value}, ...}``, braces nested in values); it is what the tests check the file
with, so a malformed entry fails CI.
"""

from __future__ import annotations

import re
from functools import lru_cache
from importlib import resources

__all__ = ["MIXER_PAPERS", "parse_bib", "bib_entries", "bibtex_for", "keys_for"]

MIXER_PAPERS: dict[str, tuple[str, ...]] = {
    "bigbird": ("zaheer2020bigbird",),
    "block_sparse": ("dao2022flashattention", "chen2022pixelated"),
    "dss": ("gupta2022dss",),
    "espa": ("he2023espa", "noci2023shaped", "he2023simplifying"),
    "evolving": ("wang2021evolving",),
    "flash": ("hua2022flash",),
    "fno": ("li2021fno",),
    "grn": ("zhang2018slstm",),
    "gss": ("mehta2023gss",),
    "h3": ("fu2023h3",),
    "hypercube": ("wang2022hypercube",),
    "kgv": ("herranz2023kgv",),
    "linear": ("katharopoulos2020linear",),
    "linformer": ("wang2020linformer",),
    "local": ("beltagy2020longformer", "guo2022longt5"),
    "lstm": ("hochreiter1997lstm",),
    "mgk": ("nguyen2022mgk",),
    "mlk": ("nguyen2022mgk",),
    "ns_rnn": ("dusell2020nsrnn", "dusell2022rnsrnn"),
    "onlstm": ("shen2019onlstm",),
    "performer": ("choromanski2021performer",),
    "rns_rnn": ("dusell2022rnsrnn",),
    "s4": ("gu2022s4",),
    "s4d": ("gu2022s4d",),
    "s5": ("smith2023s5",),
    "si_attention": ("li2022sibert",),
    "softmax": ("vaswani2017attention", "dao2022flashattention"),
    "softmax_naive": ("vaswani2017attention",),
    "spade": ("zuo2022spade",),
    "structformer": ("shen2021structformer",),
    "superposition_stack": ("joulin2015stack",),
    "transformer_ls": ("zhu2021longshort",),
    "treeformer_tc": ("madaan2023treeformer",),
    "treeformer_tf": ("madaan2023treeformer",),
}

_ENTRY_START = re.compile(r"@(\w+)\s*\{\s*([^,\s]+)\s*,")
_FIELD = re.compile(r"\s*(\w+)\s*=\s*")


def parse_bib(text: str) -> dict[str, dict]:
    """Parse BibTeX text into ``{key: {"type": ..., "fields": {name: value}, "text": raw entry}}``.

    Supports ``@type{key, name = {value}, name = "value", name = 1997}`` with nested braces in
    values; ``%`` lines outside entries are comments. Raises ValueError on an unbalanced entry, a
    field without ``=``, or a duplicate key.
    """
    out: dict[str, dict] = {}
    pos = 0
    while True:
        m = _ENTRY_START.search(text, pos)
        if m is None:
            break
        kind, key = m.group(1).lower(), m.group(2)
        i, depth = m.end(), 1  # inside the entry's outer brace
        fields: dict[str, str] = {}
        while True:
            while i < len(text) and text[i] in " \t\r\n,":
                i += 1
            if i >= len(text):
                raise ValueError(f"BibTeX entry {key!r}: unbalanced braces (end of text inside the entry)")
            if text[i] == "}":
                depth -= 1
                i += 1
                break
            f = _FIELD.match(text, i)
            if f is None:
                raise ValueError(f"BibTeX entry {key!r}: expected 'name = value' at {text[i : i + 30]!r}")
            name, i = f.group(1).lower(), f.end()
            if i < len(text) and text[i] == "{":
                d, j = 1, i + 1
                while j < len(text) and d:
                    d += {"{": 1, "}": -1}.get(text[j], 0)
                    j += 1
                if d:
                    raise ValueError(f"BibTeX entry {key!r}: unbalanced braces in field {name!r}")
                value, i = text[i + 1 : j - 1], j
            elif i < len(text) and text[i] == '"':
                j = text.find('"', i + 1)
                if j < 0:
                    raise ValueError(f"BibTeX entry {key!r}: unterminated quote in field {name!r}")
                value, i = text[i + 1 : j], j + 1
            else:
                n = re.match(r"[\w.-]+", text[i:])
                if n is None:
                    raise ValueError(f"BibTeX entry {key!r}: field {name!r} has no value")
                value, i = n.group(0), i + n.end()
            if name in fields:
                raise ValueError(f"BibTeX entry {key!r}: field {name!r} given twice")
            fields[name] = " ".join(value.split())
        if key in out:
            raise ValueError(f"BibTeX key {key!r} defined twice")
        out[key] = {"type": kind, "fields": fields, "text": text[m.start() : i]}
        pos = i
    return out


@lru_cache(maxsize=1)
def bib_entries() -> dict[str, dict]:
    """The parsed entries of the shipped ``papers.bib``."""
    return parse_bib(resources.files("longseq").joinpath("papers.bib").read_text(encoding="utf-8"))


def keys_for(mixer: str) -> tuple[str, ...]:
    """The BibTeX keys of a mixer's papers; ValueError for a name without an entry."""
    if mixer not in MIXER_PAPERS:
        raise ValueError(f"no papers recorded for mixer {mixer!r}; known: {', '.join(sorted(MIXER_PAPERS))}")
    return MIXER_PAPERS[mixer]


def bibtex_for(mixer: str) -> str:
    """The raw BibTeX entries of a mixer's papers, blank-line separated."""
    entries = bib_entries()
    return "\n\n".join(entries[k]["text"] for k in keys_for(mixer))
