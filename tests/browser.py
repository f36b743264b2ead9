"""Headless Chromium for the browser tests, through :mod:`benchmarks.browser`.

A test folder's ``conftest.py`` offers the module-scoped ``driver`` fixture
by importing it (``from tests.browser import driver``). Tests that use it are skipped, with
the reason, when selenium, ``/usr/bin/chromium`` or ``/usr/bin/chromedriver``
is missing; on CI (``CI=true``) running as root, the browser packages are
first installed with ``apt-get install -y chromium chromium-driver``.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from typing import Any

import pytest

from benchmarks.browser import chromium_missing, headless_chromium


@functools.cache
def chromium_reason() -> str | None:
    """Why headless Chromium cannot run here (``None`` if it can); installs it on CI as root."""
    return chromium_missing(install=os.environ.get("CI") == "true")


@pytest.fixture(scope="module")
def driver() -> Iterator[Any]:
    """A selenium driver on headless Chromium that records console messages."""
    reason = chromium_reason()
    if reason is not None:
        pytest.skip(reason)
    with headless_chromium() as d:
        yield d
