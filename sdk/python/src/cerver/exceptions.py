"""Exceptions raised by the Cerver SDK.

The four names of the published 0.1.0 client (``CerverError``, ``TimeoutError``,
``SandboxError``, ``AuthenticationError``) keep their meaning; the others refine them, so code
written against 0.1.0 catches everything it caught before::

    CerverError
    ├── AuthenticationError        401: missing or invalid API key
    ├── TimeoutError               a run timed out (also a builtin TimeoutError)
    ├── NetworkError               the server could not be reached
    └── SandboxError               any other error answer of the server
        ├── NotFoundError          404: unknown sandbox, file or process
        └── RateLimitError         429: daily requests or concurrent sandboxes exhausted

``RateLimitError`` and ``NotFoundError`` derive from ``SandboxError`` because 0.1.0 raised
``SandboxError`` for those answers.
"""

from __future__ import annotations

import builtins
from typing import Optional


class CerverError(Exception):
    """Base exception for Cerver errors.

    ``status_code`` is the HTTP status of the answer (``None`` when there was none) and
    ``code`` the server's machine-readable error code (e.g. ``"not_found"``).
    """

    def __init__(
        self,
        message: str = "",
        *,
        status_code: Optional[int] = None,
        code: Optional[str] = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.code = code

    def __str__(self) -> str:
        return self.message


class TimeoutError(CerverError, builtins.TimeoutError):  # noqa: A001 - name kept from 0.1.0
    """Raised when code execution times out.

    Also a builtin :class:`TimeoutError`, so ``except TimeoutError`` works whichever of the two
    names is in scope.
    """


class AuthenticationError(CerverError):
    """Raised when authentication fails (HTTP 401)."""


class NetworkError(CerverError):
    """Raised when the server cannot be reached or the connection breaks."""


class SandboxError(CerverError):
    """Raised when sandbox operations fail (any other error answer of the server)."""


class NotFoundError(SandboxError):
    """Raised for HTTP 404: unknown (or someone else's, or deleted) sandbox, file or process."""


class RateLimitError(SandboxError):
    """Raised for HTTP 429: the plan's daily requests or concurrent sandboxes are used up.

    ``retry_after`` is the number of seconds the server asked to wait (its ``Retry-After``
    header), or ``None`` when it gave none.
    """

    def __init__(
        self,
        message: str = "",
        *,
        status_code: Optional[int] = 429,
        code: Optional[str] = None,
        retry_after: Optional[int] = None,
    ) -> None:
        super().__init__(message, status_code=status_code, code=code)
        self.retry_after = retry_after
