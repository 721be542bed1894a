"""The kernel layout: every ``torch.autograd.Function`` of the package lives under ``longseq.ops``,
is registered in its op's ``TWINS`` with a naive reference from that op's ``naive.py``, and a test in
``tests/ops/test_<op>.py`` compares them (a test function that calls ``check_twin(...,
functions=(<the Function>,))`` and uses the op's entry point and its naive twin)."""

import ast
import importlib
import inspect
import pkgutil
from pathlib import Path

import torch

import longseq
import longseq.ops

HERE = Path(__file__).parent


def _all_functions():
    found = {}
    for info in pkgutil.walk_packages(longseq.__path__, "longseq."):
        if info.name.endswith(".__main__"):  # runs the CLI when imported
            continue
        module = importlib.import_module(info.name)
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if issubclass(obj, torch.autograd.Function) and obj.__module__ == info.name:
                found[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return found


def test_every_autograd_function_lives_in_ops_and_has_a_twin():
    functions = _all_functions()
    assert functions, "no autograd Function found: the walk is broken"
    outside = sorted(name for name in functions if not name.startswith("longseq.ops."))
    assert not outside, f"autograd Functions outside longseq.ops: {outside}"
    twins = longseq.ops.twins()
    missing = sorted(name for name, cls in functions.items() if cls not in twins)
    assert not missing, f"autograd Functions without a naive twin in their op's TWINS: {missing}"
    stale = sorted(
        f"{c.__module__}.{c.__qualname__}" for c in twins if f"{c.__module__}.{c.__qualname__}" not in functions
    )
    assert not stale, f"TWINS entries that are not Functions of the package: {stale}"
    for cls, (entry, naive) in twins.items():
        op = cls.__module__.split(".")[2]
        assert naive.__module__ == f"longseq.ops.{op}.naive", (cls, naive.__module__)
        assert entry.__module__.startswith(f"longseq.ops.{op}."), (cls, entry.__module__)


def _names(node):
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)} | {
        n.attr for n in ast.walk(node) if isinstance(n, ast.Attribute)
    }


def test_every_twin_pair_is_compared_by_a_test():
    for cls, (entry, naive) in longseq.ops.twins().items():
        op = cls.__module__.split(".")[2]
        path = HERE / f"test_{op}.py"
        assert path.exists(), f"{cls.__qualname__}: no {path.name} in tests/ops"
        ok = False
        for test in ast.parse(path.read_text()).body:  # a test function that calls check_twin
            if not (isinstance(test, ast.FunctionDef) and test.name.startswith("test_")):
                continue
            named = _names(test)
            for call in ast.walk(test):
                if isinstance(call, ast.Call) and getattr(call.func, "id", None) == "check_twin":
                    covered = set().union(*(_names(k.value) for k in call.keywords if k.arg == "functions"))
                    if cls.__name__ in covered and entry.__name__ in named and naive.__name__ in named:
                        ok = True
        assert ok, (
            f"{path.name}: no check_twin(...) comparing {entry.__name__} with {naive.__name__} "
            f"for {cls.__qualname__} (functions=(...))"
        )


def test_every_op_folder_has_a_naive_reference():
    for op in longseq.ops.OPS:
        package = importlib.import_module(f"longseq.ops.{op}")
        naive = importlib.import_module(f"longseq.ops.{op}.naive")
        assert naive.__doc__ and naive.__all__, op
        for name in naive.__all__:
            assert getattr(naive, name).__doc__, f"longseq.ops.{op}.naive.{name} has no docstring"
            assert getattr(package, name) is getattr(naive, name), f"longseq.ops.{op} does not export {name}"
    folders = sorted(p.parent.name for p in Path(longseq.ops.__file__).parent.glob("*/__init__.py"))
    assert folders == sorted(longseq.ops.OPS), "ops.OPS must list every op folder"
