"""The `ihuman` command line and its benchmarks (`ihuman.bench`): the top layer, which may import
engine, transport and the kernels."""
