"""The code passes the lint rules of pyproject.toml ([tool.ruff.lint]), so CI holds them."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_check_is_clean():
    pytest.importorskip("ruff", reason="ruff comes with the test extra: pip install -e '.[test]'")
    checked = ["hf_toolssm", "tests", "eval", "training", "docs"]
    done = subprocess.run([sys.executable, "-m", "ruff", "check", *checked], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, f"ruff check {' '.join(checked)}:\n{done.stdout}{done.stderr}"
