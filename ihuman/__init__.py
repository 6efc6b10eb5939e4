"""The `ihuman` command line: the top layer, which may import engine, transport and bench."""
