"""Shared helpers for the deployment-asset tests (a unique module name: other test
directories have their own conftest).

The external tools (promtool, kubectl or kustomize, kubernetes-validate, the kubernetes-models
packages for node, a Compose v2 implementation, hadolint) are installed by deploy/tests-setup.sh.
A missing tool skips its tests with the command that installs it, unless STREAMCLF_DEPLOY_STRICT=1
(CI), where it fails them instead.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
SETUP = "bash deploy/tests-setup.sh"


def tools_dir() -> Path:
    """Where deploy/tests-setup.sh puts the node packages (inside the virtual environment)."""
    return Path(os.environ.get("STREAMCLF_DEPLOY_TOOLS", Path(sys.prefix) / "deploy-tools"))


def find_tool(name: str) -> str | None:
    """`name` from the running virtual environment first (the Makefile does not activate it),
    then from PATH."""
    local = Path(sys.executable).parent / name
    if local.is_file() and os.access(local, os.X_OK):
        return str(local)
    return shutil.which(name)


def missing(what: str, install: str = SETUP) -> None:
    """Skip (or, with STREAMCLF_DEPLOY_STRICT=1, fail) a test whose tool is not installed."""
    message = f"{what} is not installed; run: {install}"
    if os.environ.get("STREAMCLF_DEPLOY_STRICT") == "1":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def require_tool(name: str, install: str = SETUP) -> str:
    path = find_tool(name)
    if path is None:
        missing(name, install)
    return path  # type: ignore[return-value]


def run(args: list[str], **kwargs) -> subprocess.CompletedProcess[str]:
    """Run a command from the repository root and capture its output as text."""
    kwargs.setdefault("cwd", REPO)
    return subprocess.run(args, capture_output=True, text=True, timeout=120, **kwargs)


def check(args: list[str], **kwargs) -> subprocess.CompletedProcess[str]:
    result = run(args, **kwargs)
    assert result.returncode == 0, (
        f"{' '.join(args)} exited {result.returncode}\n{result.stdout}\n{result.stderr}"
    )
    return result
