"""Fixtures for tests/deploy; the helpers are in deploytest.py."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# Make `import deploytest` and `import promql` work from every module of this directory.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from deploytest import SETUP, require_tool  # noqa: E402


@pytest.fixture(scope="session")
def promtool() -> str:
    return require_tool("promtool", "apt-get install -y prometheus (or: " + SETUP + ")")
