"""Benchmarks and studies of comface_hf: run each from the repository root as ``python -m benchmarks.<name>``."""
