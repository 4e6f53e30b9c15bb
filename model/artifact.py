"""Model artifact directory: save and verified, pickle-free load.

Layout::

    config.json    labels, decision rule, tokenizer settings, model config, training record
    vocab.json     the vocabulary (tokenizer.Vocab)
    weights.pt     a plain state_dict (floats stored as float16 to halve the size)
    manifest.json  sha256 of each file above, checked before anything is used

``weights.pt`` is read with ``torch.load(weights_only=True)``, so a hostile file cannot run code;
the manifest catches truncated or swapped files.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from model.lstm import LSTMConfig
from model.tokenizer import Vocab

__all__ = [
    "ArtifactError",
    "Artifact",
    "BUNDLED",
    "FORMAT_VERSION",
    "resolve_path",
    "save_artifact",
    "load_artifact",
    "update_config",
]

FORMAT_VERSION = 1
CONFIG, VOCAB, WEIGHTS, MANIFEST = "config.json", "vocab.json", "weights.pt", "manifest.json"
FILES = (CONFIG, VOCAB, WEIGHTS)
BUNDLED = Path(__file__).parent / "bundled"


class ArtifactError(Exception):
    """The artifact is missing, incomplete, tampered with or from an incompatible version."""


@dataclass
class Artifact:
    """A loaded artifact: its config.json, the model config, the vocabulary and the weights."""

    config: dict[str, Any]
    model_config: LSTMConfig
    vocab: Vocab
    state_dict: dict[str, torch.Tensor]
    path: Path


def resolve_path(path: str | Path) -> Path:
    """``"bundled"`` means the model shipped inside this package; anything else is a directory."""
    if str(path) == "bundled":
        return BUNDLED
    return Path(path)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def save_artifact(
    out_dir: str | Path,
    config: dict[str, Any],
    model_config: LSTMConfig,
    vocab: Vocab,
    state_dict: dict[str, torch.Tensor],
) -> Path:
    """Write an artifact; the manifest is written last, so a crash leaves it unloadable."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if (out / MANIFEST).exists():
        (out / MANIFEST).unlink()
    full = {**config, "format": FORMAT_VERSION, "model": model_config.to_dict()}
    if len(vocab) != model_config.vocab_size:
        raise ArtifactError(f"vocab has {len(vocab)} tokens, the model {model_config.vocab_size}")
    _write_atomic(out / CONFIG, json.dumps(full, indent=2, sort_keys=True).encode("utf-8"))
    _write_atomic(out / VOCAB, vocab.to_json().encode("utf-8"))
    compact = {
        k: (v.detach().cpu().half() if v.is_floating_point() else v.detach().cpu()).contiguous()
        for k, v in state_dict.items()
    }
    tmp = out / f".{WEIGHTS}.tmp"
    torch.save(compact, tmp)
    os.replace(tmp, out / WEIGHTS)
    manifest = {"format": FORMAT_VERSION, "sha256": {f: sha256_file(out / f) for f in FILES}}
    _write_atomic(out / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True).encode("utf-8"))
    return out


def verify(path: Path) -> None:
    """Raise ArtifactError unless every file is present and matches the manifest."""
    if not path.is_dir():
        raise ArtifactError(f"model artifact not found: {path}")
    try:
        manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
        expected = manifest["sha256"]
    except FileNotFoundError as exc:
        raise ArtifactError(f"{path}: no {MANIFEST}") from exc
    except (ValueError, KeyError, TypeError) as exc:
        raise ArtifactError(f"{path}: unreadable {MANIFEST}") from exc
    if not isinstance(expected, dict):
        raise ArtifactError(f"{path}: unreadable {MANIFEST}: sha256 is not a mapping")
    for name in FILES:
        file = path / name
        if not file.is_file():
            raise ArtifactError(f"{path}: missing {name}")
        if sha256_file(file) != expected.get(name):
            raise ArtifactError(f"{path}: {name} does not match its sha256 in {MANIFEST}")


def load_artifact(
    path: str | Path = "bundled", map_location: str | torch.device = "cpu"
) -> Artifact:
    """Verify and load an artifact directory (or ``"bundled"``)."""
    root = resolve_path(path)
    verify(root)
    try:
        config = json.loads((root / CONFIG).read_text(encoding="utf-8"))
        if config.get("format") != FORMAT_VERSION:
            raise ArtifactError(f"{root}: artifact format {config.get('format')} not supported")
        model_config = LSTMConfig.from_dict(config["model"])
        vocab = Vocab.load(root / VOCAB)
        state_dict = torch.load(root / WEIGHTS, map_location=map_location, weights_only=True)
    except ArtifactError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure here means a broken artifact
        raise ArtifactError(f"{root}: cannot load artifact: {exc}") from exc
    if len(vocab) != model_config.vocab_size:
        raise ArtifactError(f"{root}: vocab size {len(vocab)} != {model_config.vocab_size}")
    labels = config.get("labels")
    if not isinstance(labels, list) or len(labels) != model_config.num_labels:
        raise ArtifactError(f"{root}: labels do not match the model's output size")
    problem = _config_problem(config)
    if problem:
        raise ArtifactError(f"{root}: {CONFIG}: {problem}")
    return Artifact(config, model_config, vocab, state_dict, root)


def _is_probability(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= 1


def _config_problem(config: dict[str, Any]) -> str | None:
    """What makes a config unusable (it would fail, or silently mislabel, only when serving)."""
    labels = config["labels"]
    if len(labels) < 2 or not all(isinstance(x, str) and x for x in labels):
        return "labels must be two or more non-empty strings"
    if len(set(labels)) != len(labels):
        return f"labels repeat: {labels}"
    positive = config.get("positive_label")
    if positive is not None and positive not in labels:
        return f"positive_label {positive!r} is not one of the labels"
    max_tokens = config.get("max_tokens", 1)
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        return f"max_tokens must be a positive integer, not {max_tokens!r}"
    temperature = config.get("temperature", 1.0)
    if not isinstance(temperature, (int, float)) or not 0 < temperature < float("inf"):
        return f"temperature must be a positive number, not {temperature!r}"
    if config.get("threshold") is not None and not _is_probability(config["threshold"]):
        return f"threshold must be within [0, 1], not {config['threshold']!r}"
    if "head_fraction" in config and not _is_probability(config["head_fraction"]):
        return f"head_fraction must be within [0, 1], not {config['head_fraction']!r}"
    thresholds = config.get("thresholds")
    if thresholds is not None and not (
        isinstance(thresholds, dict) and all(_is_probability(v) for v in thresholds.values())
    ):
        return "thresholds must map each kind of text to a number within [0, 1]"
    return None


def update_config(path: str | Path, changes: dict[str, Any]) -> dict[str, Any]:
    """Merge *changes* into a verified artifact's config.json and rewrite its manifest.

    For decision settings chosen after training (thresholds); the weights and vocabulary are
    untouched. Returns the new config.
    """
    root = resolve_path(path)
    verify(root)
    config = json.loads((root / CONFIG).read_text(encoding="utf-8"))
    config.update(changes)
    (root / MANIFEST).unlink()
    _write_atomic(root / CONFIG, json.dumps(config, indent=2, sort_keys=True).encode("utf-8"))
    manifest = {"format": FORMAT_VERSION, "sha256": {f: sha256_file(root / f) for f in FILES}}
    _write_atomic(root / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True).encode("utf-8"))
    return config
