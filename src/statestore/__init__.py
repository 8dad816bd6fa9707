"""statestore: persist AI-agent conversation state behind one async interface.

    async with statestore.open_store("sqlite", url="sqlite:///state.db") as store:
        await store.save_state("conv-1", AgentState(user_input="hi"))

See the README for backends, configuration and writing a backend of your own: a
backend implements ``StorageBackend`` (``core/backend.py``) and users hold a ``Store``
over it (``core/store.py``).
"""

from .core.backend import (
    Capability,
    ConversationInfo,
    SaveResult,
    StorageBackend,
    StoredView,
    WritePlan,
    WriteResult,
)
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
from .core.maintenance import Maintenance, StoreStats
from .core.model import AgentState, ContextItem, Message
from .core.query import UNSET, LoadOptions, StatePatch
from .core.registry import BackendInfo, Registry, default_registry, open_store
from .core.store import Store
from .sync import SyncStore, open_store_sync

__version__ = "0.1.0"

__all__ = [
    # opening a store
    "open_store",
    "Store",
    "open_store_sync",
    "SyncStore",
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
    "SaveResult",
    "ConversationInfo",
    # writing a backend
    "StorageBackend",
    "Capability",
    "StoredView",
    "WritePlan",
    "WriteResult",
    "Maintenance",
    "StoreStats",
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
