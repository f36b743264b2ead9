"""The library package holds library code only: no test or benchmark tooling."""

from __future__ import annotations

import ast
from pathlib import Path

import descentlab

PACKAGE = Path(descentlab.__file__).parent
#: top-level modules only tests and benchmarks may import
TOOLING = {"selenium", "benchmarks", "tests", "browser", "scipy_check"}


def _imported_roots(source: str) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def test_package_imports_no_test_or_benchmark_tooling():
    offenders = {
        str(path.relative_to(PACKAGE)): sorted(_imported_roots(path.read_text()) & TOOLING)
        for path in PACKAGE.rglob("*.py")
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_moved_modules_are_gone_from_the_package():
    assert not (PACKAGE / "second_order" / "scipy_check.py").exists()
    assert not (PACKAGE / "bench" / "browser.py").exists()


def test_the_detector_sees_an_import():
    assert _imported_roots("from selenium import webdriver\nimport benchmarks.browser") == {
        "selenium", "benchmarks"}
