"""The networks: shared layers, the DiT, LR-A2V, PG-Refiner and the text encoder."""
