"""The benchmark suite (`streamclf bench`); see benchmarks/run.py and docs/performance.md."""
