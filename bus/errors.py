"""Error codes carried in ``error`` replies, and the exceptions of the bus layer.

The whole library's error tree is rooted here (``TaskmillError``) so that an error reply from
any actor turns back into the same exception class in the requester: the code selects the class.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any


class ErrorCode(IntEnum):
    """Numeric codes of ``error`` replies. Stable within a protocol major version."""

    MALFORMED = 400
    UNKNOWN_KIND = 404
    TOO_LARGE = 413
    INVALID = 422
    VERSION_MISMATCH = 426
    INTERNAL = 500
    DATABASE = 503
    UNAVAILABLE = 504
    STOPPING = 505
    PAYLOAD_TOO_LARGE = 1413
    SERIALIZATION = 1422
    NOT_FOUND = 1404
    INVALID_DEPENDENCY = 1460
    CYCLIC_DEPENDENCY = 1461
    DEPENDENCY_FAILED = 1462


class TaskmillError(Exception):
    """Base of every error taskmill raises."""

    code: ErrorCode = ErrorCode.INTERNAL

    def __init__(self, message: str = "", code: ErrorCode | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""


class BusError(TaskmillError):
    """A problem of the messaging layer."""


class ProtocolError(BusError):
    """A frame that cannot be understood: malformed, unknown kind, wrong version, too large."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message, code)


class ActorUnavailable(BusError):
    """An actor did not answer within the request timeout (or is stopping)."""

    code = ErrorCode.UNAVAILABLE


class RemoteError(TaskmillError):
    """An error reply whose code maps to no more precise class."""


class InvalidRequest(TaskmillError):
    """A request that is well-formed but not acceptable (bad priority, unknown query, ...)."""

    code = ErrorCode.INVALID


class InvalidDependencyError(InvalidRequest):
    """A submission names a dependency that is no task: neither active nor in history."""

    code = ErrorCode.INVALID_DEPENDENCY


class CyclicDependencyError(InvalidRequest):
    """A submission's dependencies would close a cycle: no task of it could ever start."""

    code = ErrorCode.CYCLIC_DEPENDENCY


class DependencyFailedError(InvalidRequest):
    """A submission names a dependency that already ended without completing (failed,
    cancelled, expired, ...), and its policy is not ``IGNORE``."""

    code = ErrorCode.DEPENDENCY_FAILED


class StoreError(TaskmillError):
    """A problem of the task store."""

    code = ErrorCode.DATABASE


class PayloadTooLarge(StoreError):
    """A payload over 1 MiB."""

    code = ErrorCode.PAYLOAD_TOO_LARGE


class SerializationError(StoreError):
    """A value that cannot be encoded (payload_json of a non-JSON value)."""

    code = ErrorCode.SERIALIZATION


class DatabaseError(StoreError):
    """SQLite reported an error."""

    code = ErrorCode.DATABASE


_BY_CODE: dict[int, type[TaskmillError]] = {
    ErrorCode.PAYLOAD_TOO_LARGE: PayloadTooLarge,
    ErrorCode.SERIALIZATION: SerializationError,
    ErrorCode.DATABASE: DatabaseError,
    ErrorCode.INVALID: InvalidRequest,
    ErrorCode.INVALID_DEPENDENCY: InvalidDependencyError,
    ErrorCode.CYCLIC_DEPENDENCY: CyclicDependencyError,
    ErrorCode.DEPENDENCY_FAILED: DependencyFailedError,
    ErrorCode.UNAVAILABLE: ActorUnavailable,
    ErrorCode.STOPPING: ActorUnavailable,
}


def error_from_reply(code: int, reason: str) -> TaskmillError:
    """The exception an ``error`` reply stands for."""
    cls = _BY_CODE.get(code)
    if cls is None:
        if code in (
            ErrorCode.MALFORMED,
            ErrorCode.UNKNOWN_KIND,
            ErrorCode.TOO_LARGE,
            ErrorCode.VERSION_MISMATCH,
        ):
            return ProtocolError(ErrorCode(code), reason)
        try:
            return RemoteError(reason, ErrorCode(code))
        except ValueError:
            return RemoteError(f"[{code}] {reason}")
    error = cls(reason)
    error.code = ErrorCode(code)
    return error


class _RetryableFlag:
    """``TaskError.retryable("msg")`` builds a retryable error; ``err.retryable`` is its flag."""

    def __get__(self, obj: TaskError | None, owner: type[TaskError]) -> Any:
        if obj is None:
            return lambda message: owner(message, retryable=True)
        return obj._retryable


class TaskError(TaskmillError):
    """Raised by an executor to fail its task: permanent, or ``TaskError.retryable(msg)``."""

    code = ErrorCode.INVALID
    retryable = _RetryableFlag()

    def __init__(self, message: str = "", *, retryable: bool = False) -> None:
        super().__init__(message)
        self._retryable = retryable

    def __repr__(self) -> str:
        kind = "retryable" if self._retryable else "permanent"
        return f"TaskError({self.message!r}, {kind})"
