"""Errors the server turns into HTTP replies: each carries its status code and a one-line detail."""

from __future__ import annotations

from sammed.errors import SammedError


class ServerError(SammedError):
    """A request the server refuses; ``status`` is the HTTP code sent back."""

    status = 400


class InvalidFieldError(ServerError):
    """A form field of the wrong type or range (JSON bodies get the same 422 from their schema)."""

    status = 422


class NotFoundError(ServerError):
    status = 404


class ForbiddenError(ServerError):
    status = 403


class ConflictError(ServerError):
    status = 409


class TooLargeError(ServerError):
    status = 413


class CapacityError(ServerError):
    status = 503
