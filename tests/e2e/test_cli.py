"""The command line as a user runs it: exit codes, error messages, the embedded broker."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import TopicReader
from worker.broker import free_port, wait_for_port

REPO = Path(__file__).resolve().parents[2]


def streamclf(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "worker", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.parametrize(
    "args, key",
    [
        (["run", "--set", "kafka.bootstrap_servrs=x:1"], "kafka.bootstrap_servrs"),
        (["run", "--set", "batching.max_batch_size=-3"], "batching.max_batch_size"),
        (["run", "--set", "model.device=tpu"], "model.device"),
        (["run", "--set", "kafka.consumer={enable_auto_commit: true}"],
         "kafka.consumer.enable_auto_commit"),
        # Keys kafka-python does not know: before, the consumer's retried forever as if the
        # broker were away and the producer's ended in a traceback with exit 1.
        (["run", "--set", "kafka.consumer.nope=1"], "kafka.consumer.nope"),
        (["run", "--set", "kafka.producer.nope=1"], "kafka.producer.nope"),
        (["run", "--set", "kafka.sasl_mechanism=PLAN"], "kafka.sasl_mechanism"),
    ],
)
def test_config_errors_exit_2_and_name_the_key(args, key):
    result = streamclf(*args, "--set", "metrics.enabled=false")
    assert result.returncode == 2, result.stderr
    assert key in result.stderr


def test_unreadable_config_file_exits_2(tmp_path):
    result = streamclf("run", "--config", str(tmp_path / "missing.yaml"))
    assert result.returncode == 2
    assert "cannot read config file" in result.stderr


def test_usage_errors_exit_2():
    assert streamclf("run", "--no-such-flag").returncode == 2
    assert streamclf().returncode == 2


@pytest.mark.integration
def test_produce_stops_at_a_bad_line_with_exit_2_after_sending_the_lines_before(
        broker, topics, tmp_path):
    names = topics()
    data = tmp_path / "msgs.jsonl"
    data.write_text('{"id": "a", "text": "hello"}\n{"id": "b", "text": \n'
                    '{"id": "c", "text": "never sent"}\n')
    result = streamclf("produce", "--bootstrap-servers", broker, "--topic", names["input"],
                       str(data))
    assert result.returncode == 2, result.stderr
    assert f"{data}:2: invalid JSON" in result.stderr
    assert "the 1 records before it were produced" in result.stderr
    assert "Traceback" not in result.stderr
    reader = TopicReader(broker, names["input"])
    assert [r.key for r in reader.wait_for(1, timeout_s=30)] == [b"a"]
    reader.close()


@pytest.mark.integration
def test_produce_names_the_files_of_a_folder_it_cannot_read(broker, topics, tmp_path):
    names = topics()
    mail = tmp_path / "mail"
    mail.mkdir()
    (mail / "1.eml").write_bytes(b"Subject: lunch\r\n\r\nlunch tomorrow?\r\n")
    (mail / "2.eml").symlink_to(tmp_path / "moved.eml")
    result = streamclf("produce", "--bootstrap-servers", broker, "--topic", names["input"],
                       str(mail))
    assert result.returncode == 0, result.stderr
    assert (f"produced 1 records to {names['input']}; left out: 1 unreadable file "
            f"({mail / '2.eml'}: a dangling link)") in result.stderr


@pytest.mark.integration
def test_broker_command_serves_and_stops_cleanly():
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "worker", "broker", "--port", str(port)],
                               cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
    try:
        assert wait_for_port("127.0.0.1", port, 30), "the broker did not listen"
        from worker.kafka import ensure_topics

        ensure_topics(f"127.0.0.1:{port}", ["cli-check"], partitions=1)
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    assert process.returncode == 0
    assert f"127.0.0.1:{port}" in output
    assert not wait_for_port("127.0.0.1", port, 0.5), "the broker outlived the command"


@pytest.mark.integration
def test_the_embedded_broker_has_its_own_session_and_refuses_a_taken_port():
    """A Ctrl-C in the terminal signals the whole foreground group: with the broker in it, the
    demo's producer flushed into a dead broker for good (`make demo` hung on Ctrl-C)."""
    import os
    import socket

    from worker.broker import EmbeddedBroker
    from worker.errors import BrokerError

    with EmbeddedBroker() as broker:
        assert os.getsid(broker._process.pid) != os.getsid(0)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        # Before, the port answered (another program) and the broker was reported listening.
        with pytest.raises(BrokerError, match=f"port {port} is already taken"):
            EmbeddedBroker(port=port).start()


def test_bench_passes_its_options_to_the_benchmark_suite():
    # The suite's own parser answers (it names its sections), not the top-level one.
    result = streamclf("bench", "--only", "nosuch", "--no-doc")
    assert result.returncode == 2
    assert "unknown sections ['nosuch']" in result.stderr, result.stderr


def test_predict_into_a_pipe_closed_early_stops_without_a_traceback(tmp_path):
    lines = tmp_path / "lines.txt"
    lines.write_text("".join(f"message number {i}\n" for i in range(4000)))
    proc = subprocess.Popen([sys.executable, "-m", "worker", "predict", "--batch-size", "16",
                             str(lines)], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    assert proc.stdout.readline()  # what `| head -1` does: read one line, then go away
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 1
    assert "Traceback" not in err and "BrokenPipeError" not in err, err


def test_eval_into_a_pipe_closed_early_stops_without_a_traceback(tmp_path):
    """`streamclf eval ... | head -3` ended in a BrokenPipeError traceback."""
    data = tmp_path / "d.jsonl"
    data.write_text("".join(f'{{"id": "{i}", "label": "{"spam" if i % 2 else "ham"}", '
                            f'"text": "message number {i}"}}\n' for i in range(6)))
    proc = subprocess.Popen([sys.executable, "-m", "worker", "eval", "--data", str(data),
                             "--split", "all"], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader is gone before eval writes its table
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 1
    assert "Traceback" not in err and "BrokenPipeError" not in err, err


@pytest.mark.parametrize("args, message", [
    (["--repeat", "-1"], "must not be negative"),
    (["--limit", "-5"], "must not be negative"),
    (["--split", "tset"], "use train, val or test"),
])
def test_produce_refuses_bad_options_before_connecting(tmp_path, args, message):
    data = tmp_path / "a.jsonl"
    data.write_text('{"id": "a", "text": "hello"}\n')
    # Nothing listens on this port: the options are checked before any connection is tried.
    result = streamclf("produce", "--bootstrap-servers", f"127.0.0.1:{free_port()}", "--topic",
                       "t", *args, str(data), timeout=20)
    assert result.returncode == 2 and message in result.stderr, result.stderr


@pytest.mark.parametrize("create", [False, True])
def test_produce_to_a_broker_that_does_not_answer_says_so_in_one_line(tmp_path, create):
    data = tmp_path / "a.jsonl"
    data.write_text('{"id": "a", "text": "hello"}\n')
    extra = ["--create-topic", "1"] if create else []
    result = streamclf("produce", "--bootstrap-servers", f"127.0.0.1:{free_port()}", "--topic",
                       "t", *extra, str(data), timeout=25)  # kafka-python's own wait is 30 s
    assert result.returncode == 1, result.stderr
    assert "cannot reach 127.0.0.1:" in result.stderr and "Traceback" not in result.stderr
