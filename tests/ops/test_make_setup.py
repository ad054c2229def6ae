"""`make test` sets up what it can: missing Debian packages are installed when it may (root or
passwordless sudo); otherwise it stops before the suite with the one command to run."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def make_packages(packages: str, as_nobody: bool) -> subprocess.CompletedProcess:
    cmd = ["make", "-s", "-C", str(ROOT), "system-packages", f"SYSTEM_PACKAGES={packages}"]
    if as_nobody:  # a user who is neither root nor a passwordless sudoer
        cmd = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_present_packages_need_nothing():
    done = make_packages("sh:dash", as_nobody=False)
    assert done.returncode == 0 and done.stdout == "" and done.stderr == ""


def passwordless_sudo() -> bool:
    return os.geteuid() != 0 and shutil.which("sudo") is not None and subprocess.run(
        ["sudo", "-n", "true"], capture_output=True).returncode == 0


@pytest.mark.skipif(os.geteuid() == 0 and shutil.which("setpriv") is None, reason="needs setpriv to drop root")
@pytest.mark.skipif(passwordless_sudo(), reason="this user may install packages: make would try apt-get")
def test_missing_package_without_root_stops_with_the_command_to_run():
    done = make_packages("sh:dash no-such-command-vocalnet:no-such-package-vocalnet", as_nobody=os.geteuid() == 0)
    assert done.returncode != 0
    assert "sudo apt-get install -y no-such-package-vocalnet\n" in done.stderr
    assert "dash" not in done.stderr  # only what is missing
