"""Typed domain errors, one class per kind of failure (as Docker's errdefs).

The API layer maps each class to an HTTP status in one place; the domain never
speaks HTTP.
"""


class EngineError(Exception):
    """Base of every error the engine raises on purpose."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(EngineError):
    pass


class InvalidParameter(EngineError):
    pass


class Conflict(EngineError):
    pass


class NotModified(EngineError):
    pass


class Forbidden(EngineError):
    pass


class Unauthorized(EngineError):
    """A registry refused the credentials (or asked for some): a 401."""


class Unavailable(EngineError):
    pass


class TooLarge(EngineError):
    """A request larger than the daemon accepts (413)."""


class NotImplementedByEngine(EngineError):
    pass


class SystemError_(EngineError):
    """An unexpected failure of the host (runtime, mount, ...): a 500."""
