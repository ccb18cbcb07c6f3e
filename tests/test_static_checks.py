"""The package ships ``py.typed``: ``mypy sb3_s2vg`` must be clean, and ``ruff`` too (lint and format)."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent


@pytest.mark.slow
def test_mypy_is_clean():
    result = subprocess.run([sys.executable, "-m", "mypy", "sb3_s2vg"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


def test_ruff_is_clean():
    paths = ["sb3_s2vg", "tests", "examples", "benchmarks"]
    lint = subprocess.run([sys.executable, "-m", "ruff", "check", *paths], cwd=ROOT, capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout[-4000:]
    style = subprocess.run([sys.executable, "-m", "ruff", "format", "--check", *paths], cwd=ROOT, capture_output=True, text=True)
    assert style.returncode == 0, style.stdout[-4000:]
