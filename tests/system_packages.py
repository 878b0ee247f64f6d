"""Real servers the system tests need, installed from Debian's packages when missing."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest


def ensure_binary(binary: str, package: str) -> str:
    """The path of ``binary``, installing ``package`` with apt-get first if needed.

    Without apt-get or root the test is skipped, except under CI, where it fails: CI must test
    against the real server.
    """
    found = shutil.which(binary)
    if found:
        return found
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "--no-install-recommends", package]
    if shutil.which("apt-get") and os.geteuid() == 0:
        done = subprocess.run(install, env=env, capture_output=True, timeout=600)
        if done.returncode != 0:  # a fresh machine's package lists may be empty
            subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, timeout=600)
            subprocess.run(install, env=env, capture_output=True, timeout=600)
    found = shutil.which(binary)
    if found:
        return found
    message = f"{binary} is not installed and could not be (apt-get install {package})"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)
