"""pytest plugin for langchain-core's own tests, run in a pytest of their own by
test_langchain_upstream.py: ``InMemoryChatMessageHistory`` becomes a
``StatestoreChatMessageHistory`` over a real database before their modules import it.

Set by the caller: ``STATESTORE_LANGCHAIN_BACKEND`` and ``STATESTORE_LANGCHAIN_URL``
(the store), ``STATESTORE_LANGCHAIN_STORE`` (``async``: a ``Store`` opened on an event
loop that runs in a thread of its own, as an application's would, so every test uses it
from other loops and threads; ``sync``: a ``SyncStore``), and
``STATESTORE_LANGCHAIN_FIXTURES`` (a file this plugin writes: the fixtures each test
ran with, as JSON, so the caller can check upstream's own fixtures were in force).
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import uuid
from collections.abc import Sequence
from typing import Any

import langchain_core.chat_history
import pytest
from langchain_core.messages import BaseMessage

import statestore
from statestore.integrations.langchain import StatestoreChatMessageHistory

PREFIX = "upstream-"

_store: statestore.Store | Any = None
_loop = asyncio.new_event_loop()
_thread = threading.Thread(target=_loop.run_forever, name="application-loop", daemon=True)
_fixtures: dict[str, list[str]] = {}


class StoreBackedHistory(StatestoreChatMessageHistory):
    """Stands in for ``InMemoryChatMessageHistory``: each one is a new conversation in
    the database holding ``messages``; two are equal when their stored messages are
    (what the in-memory class's ``==`` compares)."""

    def __init__(self, messages: Sequence[BaseMessage] = ()) -> None:
        assert _store is not None, "the store opens at session start"
        super().__init__(f"{PREFIX}{uuid.uuid4().hex}", _store)
        if messages:
            self.add_messages(messages)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, StoreBackedHistory):
            return NotImplemented
        return self.messages == other.messages

    __hash__ = None  # type: ignore[assignment]


def pytest_configure(config: Any) -> None:
    global _store
    backend = os.environ["STATESTORE_LANGCHAIN_BACKEND"]
    url = os.environ["STATESTORE_LANGCHAIN_URL"]
    if os.environ["STATESTORE_LANGCHAIN_STORE"] == "sync":
        _store = statestore.open_store_sync(backend, url=url)
    else:
        _thread.start()
        store = statestore.open_store(backend, url=url)
        asyncio.run_coroutine_threadsafe(store.__aenter__(), _loop).result()
        _store = store
    langchain_core.chat_history.InMemoryChatMessageHistory = StoreBackedHistory  # type: ignore[misc]


@pytest.fixture(autouse=True)
def _driver_reads_its_password_file(request: pytest.FixtureRequest) -> None:
    """langchain-core's blockbuster fixture fails any blocking call on the event loop.
    asyncpg makes one of its own when it opens a connection without a password: it
    looks for ~/.pgpass and its SSL files while parsing the connection arguments (stat,
    abspath). Those calls are the driver's, not the history's; every other blocking
    call still fails the test."""
    if "blockbuster" in request.fixturenames:
        blockbuster = request.getfixturevalue("blockbuster")
        for function in blockbuster.functions.values():
            function.can_block_in("asyncpg/connect_utils.py", "_parse_connect_dsn_and_args")


def pytest_runtest_setup(item: Any) -> None:
    _fixtures[item.nodeid] = list(item.fixturenames)


def pytest_unconfigure(config: Any) -> None:
    with open(os.environ["STATESTORE_LANGCHAIN_FIXTURES"], "w", encoding="utf-8") as out:
        json.dump(_fixtures, out)
    if isinstance(_store, statestore.Store):
        asyncio.run_coroutine_threadsafe(_store.close(), _loop).result()
        _loop.call_soon_threadsafe(_loop.stop)
        _thread.join()
    elif _store is not None:
        _store.close()
    _loop.close()
