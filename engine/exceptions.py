"""Errors a user of the engine can cause (bad configuration, bad input).

Programmer errors stay `assert`s; everything here carries a message that says
what was wrong and what was expected.
"""


class EngineError(Exception):
    """Base class of the engine's user-facing errors."""


class ConfigError(EngineError, ValueError):
    """A configuration or preset is invalid or unknown."""


class InputShapeError(EngineError, ValueError):
    """A tensor handed to a model or stage has the wrong shape."""
