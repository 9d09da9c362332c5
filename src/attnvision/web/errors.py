"""The API's own exception: an HTTP status and a one-line message that says what to do.

Modules below the server raise it; the server answers ``{"detail": message}`` with the
status. (``attnvision.errors.UserError`` from the library becomes a 400 the same way.)
"""

from __future__ import annotations


class ApiError(Exception):
    """A request that cannot be served as asked; ``message`` names the problem and the fix."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
