"""Errors a user causes with a media file: unreadable, unsupported, empty or too large."""

from engine.exceptions import EngineError


class MediaError(EngineError):
    """A media file cannot be used; the message says which file and why."""
