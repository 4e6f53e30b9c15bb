"""The probe and metrics HTTP server on loopback: HEAD, a failing collector, idle clients."""

from __future__ import annotations

import http.client
import socket
import time

from prometheus_client.core import GaugeMetricFamily

from worker import metrics as metrics_module
from worker.metrics import Health, Metrics, MetricsServer, ProgressClock


def serve() -> tuple[MetricsServer, Metrics]:
    m = Metrics()
    server = MetricsServer(m, Health(model_loaded=True, assigned=True), "127.0.0.1", 0)
    server.start()
    return server, m


def request(server: MetricsServer, method: str, path: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.request(method, path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def test_head_answers_like_get_without_a_body() -> None:
    server, _ = serve()
    try:
        assert request(server, "HEAD", "/healthz") == (200, b"")
        assert request(server, "HEAD", "/nope")[0] == 404
        status, body = request(server, "GET", "/metrics")
        assert status == 200 and b"streamclf_in_flight_messages" in body
    finally:
        server.stop()


def test_a_failing_collector_gives_500_and_the_server_keeps_answering() -> None:
    server, m = serve()

    class Broken:
        def collect(self):  # noqa: ANN201
            raise RuntimeError("boom")
            yield GaugeMetricFamily("x", "x")

    m.registry.register(Broken())
    try:
        assert request(server, "GET", "/metrics") == (500, b"internal error\n")
        assert request(server, "GET", "/readyz")[0] == 200
    finally:
        server.stop()


def test_idle_connections_are_closed(monkeypatch) -> None:
    monkeypatch.setattr(metrics_module, "_CLIENT_TIMEOUT_S", 0.5)
    server, _ = serve()
    try:
        idle = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        # The server closes the connection on its own: recv returns b"" (no data, EOF).
        assert idle.recv(1) == b""
        idle.close()
        assert request(server, "GET", "/healthz")[0] == 200
    finally:
        server.stop()


def test_stop_without_start_returns() -> None:
    server = MetricsServer(Metrics(), Health(), "127.0.0.1", 0)
    server.stop()  # used to wait forever for a serve_forever that never ran


def test_the_no_progress_count_starts_afresh_when_the_broker_is_back() -> None:
    clock = ProgressClock(now=100.0)
    assert clock.stalled_for(130.0) == 30.0
    clock.unreachable()
    clock.unreachable()  # still away
    assert clock.stalled_for(200.0) == 100.0  # the lag check is not made while away
    clock.reachable(280.0)  # a 150 s outage, the kind that failed every pod's liveness at once
    assert clock.stalled_for(281.0) == 1.0  # a whole stuck_after_s to reconnect and catch up
    clock.reachable(300.0)  # no outage in between: nothing restarts
    assert clock.stalled_for(300.0) == 20.0
    clock.progressed(310.0)
    assert clock.stalled_for(315.0) == 5.0


def test_a_request_with_oversized_headers_is_refused_and_the_server_keeps_answering() -> None:
    """http.server alone holds up to 100 header lines of 64 KiB per connection (300 slow
    clients took a worker to 1.9 GB); a probe's request is a few hundred bytes."""
    server, _ = serve()
    try:
        conn = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n"
                     + b"".join(b"X-Pad-%d: %s\r\n" % (i, b"p" * 1000) for i in range(20))
                     + b"\r\n")
        assert conn.makefile("rb").readline().split()[1] == b"431"
        conn.close()
        assert request(server, "GET", "/healthz")[0] == 200
    finally:
        server.stop()


def test_a_request_still_arriving_after_its_deadline_is_dropped(monkeypatch) -> None:
    monkeypatch.setattr(metrics_module, "_REQUEST_DEADLINE_S", 0.3)
    server, _ = serve()
    try:
        slow = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        slow.sendall(b"GET /healthz HTTP/1.1\r\n")
        time.sleep(0.5)  # the slow client under test: its next line comes after the deadline
        slow.sendall(b"Host: x\r\n\r\n")
        assert slow.recv(100) == b""  # closed without an answer
        slow.close()
        assert request(server, "GET", "/healthz")[0] == 200
    finally:
        server.stop()


def test_a_client_gone_mid_answer_leaves_no_traceback_on_stderr(capsys) -> None:
    server = MetricsServer(Metrics(), Health(), "127.0.0.1", 0)
    try:
        try:
            raise BrokenPipeError(32, "Broken pipe")
        except OSError:
            server._server.handle_error(None, ("127.0.0.1", 4242))
        assert capsys.readouterr().err == ""
    finally:
        server.stop()


def test_a_model_still_loading_is_alive_until_the_start_deadline() -> None:
    """Before, /healthz failed 60 s into a slow model load, and the liveness probe restarted
    the pod before it could ever finish loading."""
    health = Health(starting=True)
    health.last_loop_at = time.monotonic() - 70  # loading for 70 s: past the loop deadline
    assert health.alive() == (True, "alive")
    health.last_loop_at = time.monotonic() - health.start_deadline_s - 1
    assert health.alive() == (False, "model not loaded after 600 s")
    health.starting = False
    health.last_loop_at = time.monotonic() - 70
    assert health.alive() == (False, "worker loop has not run for 60 s")
