"""statestore: persist AI-agent conversation state behind one async interface.

    async with statestore.open_store("sqlite", url="sqlite:///state.db") as store:
        await store.save_state("conv-1", AgentState(user_input="hi"))

See the README for backends, configuration and writing a backend of your own.
"""

from .core.backend import ConversationInfo, SaveResult, StorageBackend
from .core.errors import (
    BackendNotFound,
    BackendUnavailable,
    ConversationNotFound,
    CorruptState,
    SchemaOutOfDate,
    StateStoreError,
    ValidationError,
    VersionConflict,
)
from .core.hookspecs import BackendSpec, hookimpl
from .core.model import AgentState, ContextItem, Message
from .core.query import UNSET, LoadOptions, StatePatch
from .core.registry import BackendInfo, Registry, default_registry, open_store

__version__ = "0.1.0"

__all__ = [
    # opening a store
    "open_store",
    "Registry",
    "default_registry",
    "BackendInfo",
    "BackendSpec",
    "hookimpl",
    # the model
    "AgentState",
    "Message",
    "ContextItem",
    "LoadOptions",
    "StatePatch",
    "UNSET",
    # the protocol
    "StorageBackend",
    "SaveResult",
    "ConversationInfo",
    # errors
    "StateStoreError",
    "ValidationError",
    "ConversationNotFound",
    "VersionConflict",
    "BackendNotFound",
    "BackendUnavailable",
    "SchemaOutOfDate",
    "CorruptState",
]
