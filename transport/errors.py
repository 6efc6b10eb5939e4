"""Errors a client causes; the server answers them with a 4xx and a message, and keeps serving.

They are the transport's own: the engine's errors (bad audio, a picture without a face, ...) are
answered as 400 by the server's error middleware, not by deriving from them."""


class RequestError(Exception):
    """A request the server refuses; `status` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.headers = headers or {}  # e.g. Retry-After
