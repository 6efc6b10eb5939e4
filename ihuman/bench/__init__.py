"""Benchmarks that measure the engine end to end and the kernels against SDPA (they may import
engine, ihuman_kernels and transport)."""
