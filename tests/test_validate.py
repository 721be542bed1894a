"""The shared option validator (longseq.utils.validate) and its use by the mixers: every check
names the option, the rule and the value; mixers reject bad options through it."""

import math

import pytest

import longseq
from longseq.utils.validate import check_bool, check_choice, check_int, check_number, check_optional, check_probability


def test_check_int():
    assert check_int("n", 3, min=1) == 3
    for bad in (0, -1, 2.0, True, "3", None):
        with pytest.raises(ValueError, match=r"s5: n must be a positive int, got"):
            check_int("n", bad, min=1, owner="s5")
    with pytest.raises(ValueError, match=r"depth must be an int >= 1 <= 20, got 21"):
        check_int("depth", 21, min=1, max=20)
    with pytest.raises(ValueError, match="non-negative int"):
        check_int("tc_steps", -1, min=0)


def test_check_number_probability_choice_bool_optional():
    assert check_number("x", 0.5, min=0, max=1) == 0.5
    for bad in (math.nan, math.inf, "1", True, -0.1):
        with pytest.raises(ValueError, match="x must be a finite number"):
            check_number("x", bad, min=0, max=1)
    with pytest.raises(ValueError, match="> 0"):
        check_number("expand", 0, min=0, min_open=True)
    assert check_probability("dropout", 0.0) == 0.0
    with pytest.raises(ValueError, match="dropout must be a finite number >= 0.0 and < 1.0, got 1.0"):
        check_probability("dropout", 1.0)
    assert check_choice("m", "fft", ("chunked", "fft")) == "fft"
    with pytest.raises(ValueError, match="m must be one of 'chunked', 'fft'; got 'scan'"):
        check_choice("m", "scan", ("chunked", "fft"))
    with pytest.raises(ValueError, match="True or False"):
        check_bool("b", 1)
    assert check_optional(check_int, "r", None, min=1) is None
    with pytest.raises(ValueError, match=r"r must be a positive int, got 0 \(or None\)"):
        check_optional(check_int, "r", 0, min=1)


@pytest.mark.parametrize(
    "name,options,what",
    [
        ("local", {"window": 0}, "window"),
        ("s5", {"chunk_size": 0}, "chunk_size"),
        ("s4d", {"method": "scan"}, "method"),
        ("gss", {"variant": "s4"}, "variant"),
        ("softmax", {"dropout": 1.5}, "dropout"),
        ("evolving", {"alpha": 2}, "alpha"),
        ("linformer", {"sharing": "all"}, "sharing"),
        ("treeformer_tf", {"tc_steps": -1}, "tc_steps"),
        ("flash", {"expand": 0}, "expand"),
        ("performer", {"num_features": 0}, "num_features"),
    ],
)
def test_mixers_reject_bad_options_by_name(name, options, what):
    causal = longseq.mixers.spec(name).causal and not longseq.mixers.spec(name).bidirectional
    with pytest.raises(ValueError, match=what):
        longseq.mixers.build(name, 16, causal=causal, **options)
