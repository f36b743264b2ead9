"""Headless Chromium for checking and photographing the report (selenium + chromedriver).

Test and benchmark tooling, not part of the library: ``tests/browser.py``
(imported there as ``benchmarks.browser``) builds the browser tests' fixture
on it, and ``benchmarks/compare_default.py`` takes the README screenshot
with it. Needs ``selenium`` and the system packages
``chromium`` and ``chromium-driver`` (Debian names; ``/usr/bin/chromium``,
``/usr/bin/chromedriver``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["CHROMIUM", "CHROMEDRIVER", "chromium_missing", "headless_chromium", "screenshot"]

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
ARGUMENTS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking")


def chromium_missing(install: bool = False) -> str | None:
    """Why headless Chromium cannot run here, or ``None`` if it can.

    With ``install=True``, when running as root, missing browser packages are
    installed with ``apt-get install -y chromium chromium-driver`` first.
    """
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install selenium)"
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.path.exists(p)]
    if (
        missing
        and install
        and hasattr(os, "geteuid")
        and os.geteuid() == 0
        and shutil.which("apt-get")
    ):
        subprocess.run(
            ["apt-get", "install", "-y", "chromium", "chromium-driver"],
            check=False,
            capture_output=True,
            timeout=900,
        )
        missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.path.exists(p)]
    if missing:
        return f"headless Chromium not available: missing {', '.join(missing)}"
    return None


@contextlib.contextmanager
def headless_chromium(width: int = 1280, height: int = 900) -> Iterator[Any]:
    """A selenium Chrome driver on headless Chromium that records console messages."""
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for arg in (*ARGUMENTS, f"--window-size={width},{height}"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def screenshot(
    html_file: str | os.PathLike[str],
    png: str | os.PathLike[str],
    width: int = 1280,
    height: int = 1400,
) -> Path:
    """Save a PNG screenshot of the top of an HTML file as headless Chromium renders it."""
    import time

    out = Path(png)
    out.parent.mkdir(parents=True, exist_ok=True)
    with headless_chromium(width, height) as driver:
        driver.get(Path(html_file).resolve().as_uri())
        time.sleep(2.0)  # let the trajectory animation finish its first pass
        driver.save_screenshot(str(out))
    return out
