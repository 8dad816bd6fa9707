"""The exceptions statestore raises.

Every error derives from one root, so ``except StateStoreError`` catches them all::

    StateStoreError
    ├── ValidationError        (also ValueError)  bad input, raised before any I/O
    ├── ConversationNotFound   (also KeyError)    no such conversation for this user
    ├── VersionConflict                           expected_version is stale
    ├── BackendNotFound        (also LookupError) no backend registered under a name
    ├── BackendUnavailable                        the database cannot be reached
    ├── SchemaOutOfDate                           migrations have not been applied
    └── CorruptState                              stored data cannot be read back

Driver exceptions never reach the caller: backends translate them at their boundary
with ``raise ... from exc``. Messages never contain a password.
"""

from __future__ import annotations

__all__ = [
    "StateStoreError",
    "ValidationError",
    "ConversationNotFound",
    "VersionConflict",
    "BackendNotFound",
    "BackendUnavailable",
    "SchemaOutOfDate",
    "CorruptState",
]


class StateStoreError(Exception):
    """Root of every statestore exception."""


class ValidationError(StateStoreError, ValueError):
    """A value given to statestore is invalid; nothing was written.

    ``field`` names the offending field (dotted path, e.g.
    ``conversation_history[3].metadata``) and ``reason`` says what is wrong.
    """

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}")


class ConversationNotFound(StateStoreError, KeyError):
    """No conversation with this id is visible to the caller.

    Raised both when it does not exist and when it belongs to another user, so the
    error never reveals another user's data.
    """

    def __init__(self, conversation_id: str) -> None:
        self.conversation_id = conversation_id
        super().__init__(conversation_id)

    def __str__(self) -> str:
        return f"conversation {self.conversation_id!r} not found"


class VersionConflict(StateStoreError):
    """A write named an ``expected_version`` that is no longer the stored one."""

    def __init__(self, conversation_id: str, expected: int, actual: int) -> None:
        self.conversation_id = conversation_id
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"conversation {conversation_id!r}: expected version {expected}, "
            f"stored version is {actual}"
        )


class BackendNotFound(StateStoreError, LookupError):
    """No backend is registered under the requested name."""

    def __init__(self, name: str, known: list[str]) -> None:
        self.name = name
        self.known = known
        names = ", ".join(sorted(known)) or "none"
        super().__init__(
            f"no statestore backend named {name!r}; found: {names} "
            "(a third-party backend is found once its package is installed)"
        )


class BackendUnavailable(StateStoreError):
    """The database cannot be reached, is busy past the retry budget, or dropped the
    connection. The same store object can be used again once the database is back."""


class SchemaOutOfDate(StateStoreError):
    """The database schema is not at the revision this version of statestore needs."""


class CorruptState(StateStoreError):
    """Stored data for one conversation cannot be read back (not JSON, wrong shape,
    invalid values). Other conversations are unaffected."""

    def __init__(self, conversation_id: str, reason: str) -> None:
        self.conversation_id = conversation_id
        self.reason = reason
        super().__init__(f"conversation {conversation_id!r}: stored data is corrupt: {reason}")
