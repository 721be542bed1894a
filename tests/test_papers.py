"""The files people look for: LICENSE, CITATION.cff, the BibTeX list of every implemented paper
(``longseq/papers.bib``, surfaced by ``longseq info MIXER``), and the version in one place."""

import json
import re
from pathlib import Path

import pytest

import longseq
from longseq import papers
from longseq.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_every_registered_mixer_has_bibtex_entries():
    entries = papers.bib_entries()
    missing = [n for n in longseq.mixers.names() if n not in papers.MIXER_PAPERS]
    assert not missing, f"mixers without papers: {missing}"
    stale = [n for n in papers.MIXER_PAPERS if n not in longseq.mixers.names()]
    assert not stale, f"papers recorded for unregistered mixers: {stale}"
    for name, keys in papers.MIXER_PAPERS.items():
        assert keys, name
        for k in keys:
            assert k in entries, f"{name}: key {k!r} not in papers.bib"
            f = entries[k]["fields"]
            assert f.get("title") and f.get("author") and re.fullmatch(r"(19|20)\d\d", f.get("year", "")), k
            assert f.get("booktitle") or f.get("journal"), k
    unused = set(entries) - {k for ks in papers.MIXER_PAPERS.values() for k in ks}
    assert not unused, f"entries no mixer cites: {sorted(unused)}"


def test_first_key_matches_the_spec_year():
    """The first key of each mixer is the paper its spec names: the spec's paper string carries that year."""
    entries = papers.bib_entries()
    for name in longseq.mixers.names():
        year = entries[papers.keys_for(name)[0]]["fields"]["year"]
        assert year in longseq.mixers.spec(name).paper, (name, year)


def test_parse_bib_reads_nested_braces_quotes_and_numbers():
    text = """% a comment
@article{a1, title = {The {LSTM} paper}, author = "X, Y", year = 1997, pages = {1--2},}
@inproceedings{b2,
  title={Two},
  year={2020}
}"""
    out = papers.parse_bib(text)
    assert list(out) == ["a1", "b2"]
    assert out["a1"]["type"] == "article"
    assert out["a1"]["fields"] == {"title": "The {LSTM} paper", "author": "X, Y", "year": "1997", "pages": "1--2"}
    assert out["b2"]["fields"] == {"title": "Two", "year": "2020"}
    assert out["b2"]["text"].startswith("@inproceedings{b2") and out["b2"]["text"].endswith("}")


@pytest.mark.parametrize(
    "bad, what",
    [
        ("@article{k, title = {open}", "unbalanced"),
        ("@article{k, title = {x}} @article{k, title = {y}}", "defined twice"),
        ("@article{k, title {x}}", "expected 'name = value'"),
        ('@article{k, title = "x}', "unterminated quote"),
        ("@article{k, title = {a}, title = {b}}", "given twice"),
    ],
)
def test_parse_bib_rejects_malformed_text(bad, what):
    with pytest.raises(ValueError, match=what):
        papers.parse_bib(bad)


def test_keys_for_unknown_mixer_is_a_value_error():
    with pytest.raises(ValueError, match="no papers recorded for mixer 'nope'"):
        papers.keys_for("nope")


def test_info_mixer_prints_spec_and_bibtex(capsys):
    assert main(["info", "s4d"]) == 0
    out = capsys.readouterr().out
    assert "mixer      s4d" in out and "d_state=64" in out
    assert "@inproceedings{gu2022s4d," in out
    assert main(["info", "softmax", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["spec"]["name"] == "softmax" and "num_heads" in d["options"]
    assert set(d["bibtex"]) == {"vaswani2017attention", "dao2022flashattention"}


def test_info_unknown_name_says_run_dir_or_mixer(capsys):
    assert main(["info", "not_a_mixer_or_dir"]) == 2
    assert "not a registered mixer name" in capsys.readouterr().err


def test_license_citation_and_single_version():
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    lic = (ROOT / "LICENSE").read_text()
    assert lic.startswith("MIT License") and "the longseq authors" in lic
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert meta["project"]["license"]["text"] == "MIT"
    assert "version" not in meta["project"] and "version" in meta["project"]["dynamic"]
    assert meta["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "longseq._version.__version__"}
    assert "papers.bib" in meta["tool"]["setuptools"]["package-data"]["longseq"]
    cff = (ROOT / "CITATION.cff").read_text()
    assert re.search(r"^cff-version: 1\.2\.0$", cff, re.M) and re.search(r"^license: MIT$", cff, re.M)
    assert re.search(r"^version: (\S+)$", cff, re.M).group(1) == longseq.__version__
