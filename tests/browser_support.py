"""A real headless browser for the dashboard's tests: Debian's Chromium and ChromeDriver, driven
by selenium. ``chrome`` installs what is missing (apt-get, pip) and skips only when it cannot
(fails under CI, which must test the page in a real browser)."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from system_packages import ensure_binary

CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",  # root, in a container
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    # No connections of the browser's own: this machine reaches no host but its registries.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,900",
)


def _unavailable(message: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def ensure_selenium() -> Any:
    """The ``selenium.webdriver`` module, installed with pip first if needed."""
    try:
        return importlib.import_module("selenium.webdriver")
    except ImportError:
        pass
    install = [sys.executable, "-m", "pip", "install", "--quiet", "selenium>=4.20"]
    done = subprocess.run(install, capture_output=True, timeout=600)
    importlib.invalidate_caches()
    try:
        return importlib.import_module("selenium.webdriver")
    except ImportError:
        _unavailable(f"selenium is not installed and could not be: {done.stderr[-300:]!r}")
        raise


@contextmanager
def chrome(profile: Path) -> Iterator[Any]:
    """A headless Chromium (a selenium ``WebDriver``) with an empty profile in ``profile``."""
    webdriver = ensure_selenium()
    chromium = ensure_binary("chromium", "chromium")
    driver_path = ensure_binary("chromedriver", "chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    # Both paths given: selenium looks for no driver or browser of its own to download.
    service = webdriver.ChromeService(executable_path=driver_path)
    driver = webdriver.Chrome(options=options, service=service)
    try:
        yield driver
    finally:
        driver.quit()
