"""Settings that cannot work with the model the worker loads stop it at start-up (exit 2)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import torch

from model.artifact import load_artifact, save_artifact
from tests.unit.test_model_train import _options, _write_data
from worker.app import Worker, routes_for
from worker.config import load_config
from worker.errors import ConfigError


@pytest.fixture(scope="module")
def three_labels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from model.train import train

    tmp = tmp_path_factory.mktemp("three")
    train(_options(_write_data(tmp / "topics.jsonl"), tmp / "art", epochs=1))
    return tmp / "art"


def start(*overrides: str) -> None:
    # Nothing listens at the broker address: every check here comes before connecting.
    config = load_config(None, ["kafka.bootstrap_servers=127.0.0.1:1", "kafka.input_topics=in",
                                "metrics.enabled=false", *overrides], environ={})
    Worker(config).run()


def test_a_threshold_for_a_model_without_a_positive_label(three_labels: Path) -> None:
    with pytest.raises(ConfigError, match="model.threshold: .* no positive label"):
        start(f"model.path={three_labels}", "model.threshold=0.9")


def test_a_route_for_a_label_the_model_does_not_have(three_labels: Path) -> None:
    with pytest.raises(ConfigError, match=r"output.routes.spam: not a label of .*cooking"):
        start(f"model.path={three_labels}", "output.routes.spam=quarantine")


def test_route_keys_match_labels_ignoring_case_when_unambiguous() -> None:
    # Environment variables are read lower-cased: STREAMCLF__OUTPUT__ROUTES__FR gives "fr".
    assert routes_for({"fr": "t-fr", "DE": "t-de"}, ("DE", "EN", "FR"), "m@1") == {
        "FR": "t-fr", "DE": "t-de"}
    with pytest.raises(ConfigError, match="output.routes.fr"):
        routes_for({"fr": "t"}, ("FR", "Fr"), "m@1")


def test_a_route_for_norwegian_written_no_colon_says_to_quote_it() -> None:
    routes = load_config(overrides=["output.routes={no: t-no, en: t-en}"], environ={}).output.routes
    with pytest.raises(ConfigError, match="output.routes.false: .*quote the label"):
        routes_for(routes, ("en", "no"), "m@1")
    quoted = load_config(overrides=["output.routes={'no': t-no}"], environ={}).output.routes
    assert routes_for(quoted, ("en", "no"), "m@1") == {"no": "t-no"}


def test_a_metrics_port_already_taken() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=f"metrics.port: cannot listen on 127.0.0.1:{port}"):
            start("metrics.enabled=true", "metrics.host=127.0.0.1", f"metrics.port={port}")


def test_an_artifact_with_weights_that_are_not_numbers(three_labels: Path,
                                                       tmp_path: Path) -> None:
    art = load_artifact(three_labels)
    state = {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v
             for k, v in art.state_dict.items()}
    save_artifact(tmp_path / "nan", art.config, art.model_config, art.vocab, state)
    with pytest.raises(ConfigError, match="model.path: .*not finite"):
        start(f"model.path={tmp_path / 'nan'}")


def test_the_worker_counts_as_starting_while_its_model_loads(monkeypatch) -> None:
    from model.predictor import Predictor

    config = load_config(None, ["kafka.bootstrap_servers=127.0.0.1:1", "kafka.input_topics=in",
                                "metrics.enabled=false"], environ={})
    worker = Worker(config)
    seen = []
    real_load = Predictor.load

    def watched_load(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        seen.append(worker.health.starting)
        worker.stop()  # once loaded, return before connecting
        return real_load(*args, **kwargs)

    monkeypatch.setattr(Predictor, "load", watched_load)
    assert worker.run() == 0
    assert seen == [True] and not worker.health.starting
