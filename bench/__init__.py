"""Benchmarks that measure the engine end to end (they may import engine, kernels and transport)."""
