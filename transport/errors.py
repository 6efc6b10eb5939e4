"""Errors a client causes; the server answers them with a 4xx and a message, and keeps serving."""

from engine.exceptions import EngineError


class RequestError(EngineError):
    """A request the server refuses; `status` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status
