"""Streaming: the segment planner (and later stages, pipeline, pacing); no network here."""
