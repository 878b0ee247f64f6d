"""monitoring/alerts.yml: the rules load, and promtool's unit tests of each alert
(monitoring/alerts_test.yml) pass: every alert fires where it should and stays quiet where it
should not."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.system_packages import ensure_binary

pytestmark = pytest.mark.system

MONITORING = Path(__file__).resolve().parents[2] / "monitoring"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    binary = ensure_binary("promtool", "prometheus")  # Debian's package carries promtool
    return subprocess.run(
        [binary, *args], cwd=MONITORING, capture_output=True, text=True, timeout=60
    )


@pytest.mark.timeout(120)
def test_the_alert_rules_load() -> None:
    done = promtool("check", "rules", "alerts.yml")
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.timeout(120)
def test_every_alert_fires_where_it_should_and_only_there() -> None:
    done = promtool("test", "rules", "alerts_test.yml")
    assert done.returncode == 0, done.stdout + done.stderr
    tested = {
        line.split(":", 1)[1].strip()
        for line in (MONITORING / "alerts_test.yml").read_text().splitlines()
        if line.strip().startswith("alertname:")
    }
    defined = {
        line.split(":", 1)[1].strip()
        for line in (MONITORING / "alerts.yml").read_text().splitlines()
        if line.strip().startswith("- alert:")
    }
    assert tested == defined, "every alert has a unit test"


@pytest.mark.timeout(120)
def test_the_shipped_prometheus_configuration_loads_the_rules() -> None:
    done = promtool("check", "config", "prometheus.yml")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "alerts.yml" in done.stdout
