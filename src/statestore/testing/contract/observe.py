"""The observability hook: ``statestore_operation_done`` is called once per successful
operation, with the backend's name, the operation, the conversation id, the seconds
it took and the rows it read or wrote."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from ...core.errors import ConversationNotFound
from ...core.hookspecs import hookimpl
from ...core.model import AgentState
from ...core.query import LoadOptions, StatePatch
from ...core.registry import Registry
from ..plugin import BackendTarget
from ._support import ContractTest, message, new_id, requires

__all__ = ["TestObservability"]


@dataclass
class Operation:
    backend: str
    operation: str
    conversation_id: str | None
    seconds: float
    rows: int


class Recorder:
    """A plugin that records every finished operation."""

    def __init__(self) -> None:
        self.operations: list[Operation] = []

    @hookimpl
    def statestore_operation_done(
        self, backend: str, operation: str, conversation_id: str | None, seconds: float, rows: int
    ) -> None:
        self.operations.append(Operation(backend, operation, conversation_id, seconds, rows))

    def take(self) -> list[Operation]:
        taken, self.operations = self.operations, []
        return taken


def _registry_with(recorder: Recorder, target: BackendTarget) -> Registry:
    registry = target.registry()
    registry.register(recorder, name="contract-recorder")
    return registry


class TestObservability(ContractTest):
    """statestore_operation_done reports every successful operation."""

    async def test_every_operation_is_reported(
        self, backend_target: BackendTarget, store_url: str | None
    ) -> None:
        """save, load, update, list and delete each call the hook once, with the
        backend's name, the operation, the conversation id, a duration and a row
        count."""
        recorder = Recorder()
        registry = _registry_with(recorder, backend_target)
        cid, user = new_id(), new_id("user")
        async with registry.open_store(backend_target.backend, store_url) as store:
            await store.save_state(cid, AgentState(conversation_history=[message(0)]), user_id=user)
            await store.load_state(cid)
            await store.update_state(cid, StatePatch(append_messages=[message(1)]))
            await store.list_conversations(user_id=user, limit=5)
            await store.delete_state(cid)
        reported = recorder.take()
        # A backend built on others (dual) may report its parts' operations too, under
        # their own names; its own are reported exactly once each.
        known = set(registry.backends())
        assert all(o.backend in known for o in reported), reported
        ops = [o for o in reported if o.backend == backend_target.backend]
        assert [o.operation for o in ops] == [
            "save_state",
            "load_state",
            "update_state",
            "list_conversations",
            "delete_state",
        ]
        for op in ops:
            assert op.backend == backend_target.backend
            assert isinstance(op.seconds, float) and 0 <= op.seconds < 600
            assert isinstance(op.rows, int) and op.rows >= 0
        assert [o.conversation_id for o in ops] == [cid, cid, cid, None, cid]
        save, load, update, listing, delete = ops
        assert save.rows >= 1 and load.rows >= 1 and update.rows >= 1 and delete.rows >= 1
        assert listing.rows == 1  # one conversation listed

    async def test_failed_operations_are_not_reported(
        self, backend_target: BackendTarget, store_url: str | None
    ) -> None:
        """An operation that raises (not found) does not call the hook."""
        recorder = Recorder()
        registry = _registry_with(recorder, backend_target)
        async with registry.open_store(backend_target.backend, store_url) as store:
            with pytest.raises(ConversationNotFound):
                await store.load_state(new_id())
            with pytest.raises(ConversationNotFound):
                await store.update_state(new_id(), StatePatch())
        assert recorder.take() == []

    async def test_other_registries_are_not_called(
        self, backend_target: BackendTarget, store_url: str | None
    ) -> None:
        """A recorder on one registry sees nothing of a store opened through another."""
        recorder = Recorder()
        _registry_with(recorder, backend_target)
        async with backend_target.registry().open_store(backend_target.backend, store_url) as store:
            await store.save_state(new_id(), AgentState())
        assert recorder.take() == []

    @requires("incremental_writes")
    async def test_append_reports_only_new_rows(
        self, backend_target: BackendTarget, store_url: str | None
    ) -> None:
        """Appending one message to a loaded 200-message state (or by patch) writes
        O(new) rows: the hook reports at most the state row and the new message,
        a windowed load reads only its window."""
        recorder = Recorder()
        registry = _registry_with(recorder, backend_target)
        cid = new_id()
        async with registry.open_store(backend_target.backend, store_url) as store:
            await store.save_state(
                cid, AgentState(conversation_history=[message(i) for i in range(200)])
            )
            state = await store.load_state(cid, LoadOptions(last_messages=5))
            state.conversation_history.append(message(200))
            await store.save_state(cid, state)
            await store.update_state(cid, StatePatch(append_messages=[message(201)]))
        reported = recorder.take()
        own = [o for o in reported if o.backend == backend_target.backend]
        first_save, window, save, update = own
        assert first_save.rows >= 200
        assert window.rows <= 1 + 5
        assert save.rows <= 2
        assert update.rows <= 2
