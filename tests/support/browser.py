"""Debian's chromium driven by Playwright for the tests of robin's pages: no browser download, a fresh profile."""
from __future__ import annotations

import shutil
import subprocess
import tempfile
from contextlib import contextmanager
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
VIEWPORT = {"width": 1280, "height": 900}


@contextmanager
def chromium(profile_prefix: str, extra_args: list[str] | tuple[str, ...] = ()):
    """A persistent browser context with CHROMIUM_ARGS + `extra_args`, closed and its profile removed afterwards;
    the test is skipped where Playwright or chromium is missing (installed first where apt-get is) or cannot start."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    if not Path(CHROMIUM).exists() and shutil.which("apt-get"):
        subprocess.run(["apt-get", "install", "-y", "-qq", "chromium"], capture_output=True, check=False)
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is missing and could not be installed (apt-get install chromium)")
    profile = tempfile.mkdtemp(prefix=profile_prefix)
    try:
        with sync_api.sync_playwright() as playwright:
            try:
                context = playwright.chromium.launch_persistent_context(
                    profile, executable_path=CHROMIUM, args=[*CHROMIUM_ARGS, *extra_args], headless=True,
                    viewport=VIEWPORT)
            except sync_api.Error as exc:
                pytest.skip(f"{CHROMIUM} could not be launched: {exc}")
            try:
                yield context
            finally:
                context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)
