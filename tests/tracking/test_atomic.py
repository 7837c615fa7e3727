"""The lock between processes that prepare one file (ser.tracking.atomic.exclusive_lock):
one holder at a time, a waiter says so, a dead holder frees it, nothing beside the data."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ser.tracking.atomic import exclusive_lock, lock_file
from tests.helpers.config import ROOT

# A holder in another process: takes the lock, says so, then sleeps until killed.
HOLDER = """
import sys, time
from ser.tracking.atomic import exclusive_lock
with exclusive_lock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(600)
"""


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_a_waiter_says_so_and_gets_the_lock_when_the_holder_dies(
    tmp_path: Path, cache: Path, caplog: pytest.LogCaptureFixture
) -> None:
    guarded = tmp_path / "data" / "features.pt"
    guarded.parent.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(guarded)], cwd=ROOT, stdout=subprocess.PIPE, text=True,
        env={**os.environ, "XDG_CACHE_HOME": str(cache)},
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        # Killed in a second: the operating system drops its lock, no clean-up runs.
        killer = subprocess.Popen(["sh", "-c", f"sleep 1; kill -{signal.SIGKILL} {holder.pid}"])
        began = time.monotonic()
        with caplog.at_level(logging.INFO), exclusive_lock(guarded, waiting="waiting for the other one"):
            waited = time.monotonic() - began
        killer.wait(timeout=60)
    finally:
        holder.kill()
        holder.wait(timeout=60)
    assert waited >= 0.5  # it did wait for the holder
    assert caplog.text.count("waiting for the other one") == 1
    assert list(guarded.parent.iterdir()) == []  # no lock file beside the data
    assert lock_file(guarded).parent == cache / "ser" / "locks"


def test_one_path_one_lock_another_path_another(tmp_path: Path, cache: Path) -> None:
    assert lock_file(tmp_path / "a") == lock_file(tmp_path / "x" / ".." / "a")
    assert lock_file(tmp_path / "a") != lock_file(tmp_path / "b")
    with exclusive_lock(tmp_path / "a"), exclusive_lock(tmp_path / "b"):  # no wait between paths
        pass
