"""The suite registry: named problem lists for ``descentlab compare --suite``."""

from __future__ import annotations

import pytest

from descentlab.problems import (
    DEEP_SUITE,
    DEFAULT_SUITE,
    available_problems,
    available_suites,
    get_problem,
    get_suite,
    register_suite,
    registry,
)


def test_built_in_suites():
    assert {"default", "deep"} <= set(available_suites())
    assert available_suites() == sorted(available_suites())
    assert list(get_suite("default").problems) == DEFAULT_SUITE
    deep = get_suite("deep")
    assert list(deep.problems) == DEEP_SUITE
    # the list: the digits CNN, the autoencoder, the character transformer and new nets
    assert {"digits_cnn", "digits_autoencoder", "stdlib_char_transformer"} < set(deep.problems)
    assert {"digits_resnet", "stdlib_char_lstm", "adding_gru"} <= set(deep.problems)
    assert all(get_problem(n).kind == "learning" for n in deep.problems)
    assert deep.description and "\n" not in deep.description


def test_unknown_suite_lists_valid_names():
    message = "unknown suite 'dep'; did you mean 'deep'. valid names: deep, default"
    with pytest.raises(ValueError, match=message):
        get_suite("dep")
    with pytest.raises(TypeError, match="suite name must be a str"):
        get_suite(None)


def test_register_suite_checks_its_input(monkeypatch):
    monkeypatch.setattr(registry, "_SUITES", dict(registry._SUITES))
    suite = register_suite("tiny", ["square", "beale"], "two analytic functions")
    assert get_suite("tiny") == suite and "tiny" in available_suites()
    assert register_suite("tiny", ("square", "beale"), "two analytic functions") == suite
    with pytest.raises(ValueError, match="different suite named 'tiny'"):
        register_suite("tiny", ["square"], "one")
    with pytest.raises(ValueError, match="names no problems"):
        register_suite("empty", [], "nothing")
    with pytest.raises(ValueError, match="more than once: square"):
        register_suite("twice", ["square", "square"], "twice")
    register_suite("broken", ["square", "no_such_problem"], "a typo")
    with pytest.raises(ValueError, match="unknown problem 'no_such_problem'"):
        get_suite("broken")
    assert "no_such_problem" not in available_problems()
