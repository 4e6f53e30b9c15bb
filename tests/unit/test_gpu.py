"""The CUDA code path: skipped where no GPU is present."""

import pytest
import torch

from model.predictor import Predictor

pytestmark = pytest.mark.gpu
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")

TEXTS = ["Lunch at noon?", "WIN a FREE prize now, txt CLAIM to 80082", "see attached report " * 50]


@needs_cuda
def test_cuda_scores_match_cpu():
    cpu = Predictor.load("bundled", device="cpu").predict(TEXTS)
    gpu = Predictor.load("bundled", device="cuda")
    assert gpu.device.type == "cuda"
    for a, b in zip(cpu, gpu.predict(TEXTS), strict=True):
        assert a.label == b.label
        assert a.score == pytest.approx(b.score, abs=1e-3)


@needs_cuda
def test_auto_picks_cuda():
    assert Predictor.load("bundled", device="auto").device.type == "cuda"


@needs_cuda
def test_int8_is_cpu_only():
    # quantize: auto keeps float32 on the GPU; int8 is refused there.
    assert not Predictor.load("bundled", device="cuda", quantize="auto").quantized
    with pytest.raises(ValueError, match="CPU only"):
        Predictor.load("bundled", device="cuda", quantize="int8")


def test_auto_falls_back_to_cpu_without_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert Predictor.load("bundled", device="auto").device.type == "cpu"
    with pytest.raises(ValueError, match="CUDA is not available"):
        Predictor.load("bundled", device="cuda")


@needs_cuda
def test_a_batch_too_large_for_gpu_memory_fails_and_the_next_smaller_one_runs():
    """What the worker's halving retry relies on: a batch that outgrows GPU memory raises an
    ordinary exception (the caching allocator frees its cached blocks before giving up), and
    the predictor works on afterwards. Memory is capped a little above what the model holds;
    20,000 × 512 tokens need ~4 GB of embeddings alone."""
    predictor = Predictor.load("bundled", device="cuda")
    predictor.predict(TEXTS)
    total = torch.cuda.get_device_properties(0).total_memory
    torch.cuda.set_per_process_memory_fraction(
        (torch.cuda.memory_reserved() + 256 * 2**20) / total)
    try:
        with pytest.raises(torch.cuda.OutOfMemoryError):
            predictor.predict_ids([[5] * 512] * 20_000)
        assert len(predictor.predict_ids([[5] * 512] * 16)) == 16
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
