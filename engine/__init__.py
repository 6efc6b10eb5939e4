"""InfinityHuman Live engine: everything that turns audio into frames; no network."""
