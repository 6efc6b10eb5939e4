"""Procedural talking-avatar data: seeded 2D characters animated by speech, with exact ground truth."""
