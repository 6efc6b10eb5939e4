"""Media files in and out of the engine: reference images, audio files, MP4 output (no network)."""
