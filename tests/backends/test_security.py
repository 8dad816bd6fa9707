"""Security: ownership checked in the statement that reads or writes, passwords never
shown, and a least-privilege PostgreSQL role enough for everything at run time."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import traceback
import uuid
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest

import statestore
from statestore import (
    AgentState,
    ContextItem,
    ConversationNotFound,
    LoadOptions,
    Message,
    SchemaOutOfDate,
    StatePatch,
    StateStoreError,
    Store,
    ValidationError,
)
from statestore.backends.sql import migrate
from statestore.cli import main as cli_main

# -- ownership -------------------------------------------------------------------------


async def test_wrong_user_is_refused_by_every_operation(store: Store) -> None:
    """Every operation naming another user than the owner: not found, nothing
    written, nothing listed, and no error message carries the owner's data."""
    cid, owner, intruder = f"own-{uuid.uuid4().hex[:8]}", "alice", "mallory"
    secret = "alice's secret"
    await store.save_state(
        cid,
        AgentState(user_input=secret, conversation_history=[Message("user", secret)]),
        user_id=owner,
    )
    attempts = [
        store.load_state(cid, user_id=intruder),
        store.load_state(cid, LoadOptions(last_messages=1), user_id=intruder),
        store.update_state(cid, StatePatch(user_input="pwned"), user_id=intruder),
        store.update_state(cid, StatePatch(step_count=9), user_id=intruder, expected_version=1),
        store.save_state(cid, AgentState(user_input="pwned"), user_id=intruder),
        store.save_state(cid, AgentState(user_input="pwned"), user_id=intruder, expected_version=1),
    ]
    for attempt in attempts:
        with pytest.raises(ConversationNotFound) as info:
            await attempt
        assert secret not in str(info.value) and owner not in str(info.value)
    assert await store.delete_state(cid, user_id=intruder) is False
    assert cid not in [c.conversation_id for c in await store.list_conversations(user_id=intruder)]
    # A state loaded by the owner, saved under the intruder's name, is refused too.
    loaded = await store.load_state(cid, user_id=owner)
    loaded.conversation_history.append(Message("user", "pwned"))
    with pytest.raises(ConversationNotFound):
        await store.save_state(cid, loaded, user_id=intruder)

    stored = await store.load_state(cid, user_id=owner)
    assert (stored.version, stored.user_input, stored.history_total) == (1, secret, 1)


async def test_ownership_holds_while_a_conversation_changes_hands(store: Store) -> None:
    """Two users keep deleting and re-creating the same conversation id while both
    keep reading and appending to it: each only ever sees or changes their own
    conversation, which a check made in a separate statement could not guarantee."""
    cid = f"race-{uuid.uuid4().hex[:8]}"
    users = ("alice", "bob")
    leaks: list[str] = []

    async def owner_loop(user: str) -> None:
        for _ in range(15):
            with contextlib.suppress(ConversationNotFound):  # the other user holds it
                await store.save_state(
                    cid, AgentState(user_input=user, metadata={"owner": user}), user_id=user
                )
            await asyncio.sleep(0)
            await store.delete_state(cid, user_id=user)

    async def reader_loop(user: str) -> None:
        for _ in range(40):
            try:
                state = await store.load_state(cid, user_id=user)
            except ConversationNotFound:
                pass
            else:
                if state.user_id not in (user, None) or state.user_input != user:
                    leaks.append(f"{user} read {state.user_input!r}")
            with contextlib.suppress(ConversationNotFound):
                await store.update_state(
                    cid, StatePatch(append_messages=[Message("user", user)]), user_id=user
                )
            await asyncio.sleep(0)

    await asyncio.gather(*(owner_loop(u) for u in users), *(reader_loop(u) for u in users))
    assert leaks == []
    for user in users:
        try:
            state = await store.load_state(cid, user_id=user)
        except ConversationNotFound:
            continue
        assert {m.content for m in state.conversation_history} <= {user}


# -- passwords ---------------------------------------------------------------------------

PASSWORD = "S3cr3t-pw-7731"


def _everything_shown(exc: BaseException) -> str:
    """The message, repr and whole traceback chain of ``exc``, as a user could see."""
    return "".join(traceback.format_exception(exc)) + repr(exc) + str(exc)


@pytest.fixture
def all_logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    with caplog.at_level(logging.DEBUG):
        yield caplog


@pytest.mark.parametrize("backend", ["postgres", "legacy-blob"])
@pytest.mark.parametrize(
    "where",
    ["127.0.0.1:1/statestore", "127.0.0.1:5432/no_such_database_for_statestore"],
    ids=["refused", "no-database"],
)
async def test_passwords_never_shown_when_connecting_fails(
    backend: str, where: str, all_logs: pytest.LogCaptureFixture
) -> None:
    """A connection that fails (refused port, missing database) raises a
    StateStoreError whose message, repr and traceback chain, the store's repr and
    the logs never contain the password."""
    url = f"postgresql://postgres:{PASSWORD}@{where}"
    store = statestore.open_store(backend, url)
    assert PASSWORD not in repr(store)
    with pytest.raises(StateStoreError) as info:
        async with store:
            pass
    assert "***" in str(info.value)
    assert PASSWORD not in _everything_shown(info.value)
    with pytest.raises(StateStoreError) as info:
        async with statestore.open_store(backend, url, migrate=True):
            pass
    assert PASSWORD not in _everything_shown(info.value)
    assert PASSWORD not in all_logs.text


async def test_password_in_the_query_string_is_masked_too(
    all_logs: pytest.LogCaptureFixture,
) -> None:
    """A password given as ``?password=...`` (libpq style) is masked like one in the
    user part of the URL."""
    url = f"postgresql://postgres@127.0.0.1:1/statestore?password={PASSWORD}"
    store = statestore.open_store("postgres", url)
    assert PASSWORD not in repr(store)
    with pytest.raises(StateStoreError) as info:
        async with store:
            pass
    assert "password=***" in str(info.value)
    assert PASSWORD not in _everything_shown(info.value) + all_logs.text


@pytest.mark.postgres
async def test_passwords_never_shown_by_a_working_store(
    postgres_url: str, all_logs: pytest.LogCaptureFixture
) -> None:
    """A store opened with a password (percent-encoded characters included) works, and
    neither its repr, its errors (schema out of date, not found, bad input) nor the
    logs show the password, raw or decoded."""
    raw, encoded = "p@ss:w%rd/x", "p%40ss%3Aw%25rd%2Fx"
    server, _, database = postgres_url.rpartition("/")
    host = server.split("@", 1)[1]
    url = f"postgresql://postgres:{encoded}@{host}/{database}"
    shown: list[str] = []
    async with statestore.open_store("postgres", url) as store:
        shown.append(repr(store))
        await store.save_state("pw", AgentState(user_input="x"))
        for bad in (store.load_state("missing"), store.load_state(" bad id")):
            with pytest.raises(StateStoreError) as info:
                await bad
            shown.append(_everything_shown(info.value))
    empty = f"statestore_empty_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(postgres_url)
    await admin.execute(f'CREATE DATABASE "{empty}"')
    try:
        with pytest.raises(SchemaOutOfDate) as out_of_date:
            async with statestore.open_store(
                "postgres", f"postgresql://postgres:{encoded}@{host}/{empty}"
            ):
                pass
        shown.append(_everything_shown(out_of_date.value))
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{empty}" WITH (FORCE)')
        await admin.close()
    shown.append(all_logs.text)
    for text in shown:
        assert raw not in text and encoded not in text
    assert "***" in shown[0]


@pytest.mark.parametrize(
    "argv",
    [
        ["show", "conv-1"],
        ["migrate"],
        ["show", "conv-1", "--backend", "legacy-blob"],
    ],
    ids=["show", "migrate", "show-legacy"],
)
def test_cli_never_prints_the_password(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """CLI commands against an unreachable server fail with one line and exit status
    2; neither stdout nor stderr contains the password."""
    url = f"postgresql://postgres:{PASSWORD}@127.0.0.1:1/statestore"
    status = cli_main([*argv, "--url", url])
    out, err = capsys.readouterr()
    assert status == 2
    assert "statestore: error:" in err
    assert PASSWORD not in out + err


@pytest.mark.parametrize(
    ("url", "shown_as"),
    [
        (f"postgresql://app:{PASSWORD[:4]}/{PASSWORD[4:]}@127.0.0.1:5432/db", "app:***@127.0.0.1"),
        (f"postgresql://app:{PASSWORD[:4]}#{PASSWORD[4:]}@127.0.0.1:5432/db", "app:***@127.0.0.1"),
        (f"postgresql://app:{PASSWORD[:4]}?{PASSWORD[4:]}@127.0.0.1:5432/db", "app:***@127.0.0.1"),
        (f"postgresql://app:{PASSWORD}@127.0.0.1:99999/db", "app:***@127.0.0.1:99999"),
        (f"app:{PASSWORD}@127.0.0.1/db", "app:***@127.0.0.1/db"),
    ],
    ids=["slash", "hash", "question-mark", "port", "no-scheme"],
)
async def test_a_url_that_does_not_parse_is_refused_without_its_password(
    url: str, shown_as: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A password with an unescaped ``/``, ``#`` or ``?`` cuts a URL's server part
    short (the driver would fail on the port, or connect as someone else), and a port
    out of range fails in the driver: each is a ValidationError naming the URL with
    its password masked, from open_store, migrate and the CLI alike, never a driver
    error holding part of the password."""
    errors = []

    async def open_it() -> None:
        async with statestore.open_store("postgres", url):
            pass

    for attempt in (open_it, lambda: migrate.upgrade(url)):
        with pytest.raises(ValidationError) as info:
            await attempt()
        errors.append(_everything_shown(info.value))
    for argv in (["show", "c"], ["migrate"]):
        assert await asyncio.to_thread(cli_main, [*argv, "--url", url]) == 2
        errors.append("".join(capsys.readouterr()))
    for text in errors:
        assert shown_as in text
        assert PASSWORD[:4] not in text and PASSWORD[4:] not in text


# -- a least-privilege role -------------------------------------------------------------

APP_GRANTS = [
    'GRANT CONNECT ON DATABASE "{db}" TO "{role}"',
    'GRANT USAGE ON SCHEMA public TO "{role}"',
    'GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO "{role}"',
]
LEGACY_GRANT = 'GRANT USAGE ON SEQUENCE memory_chunks_id_seq TO "{role}"'


@pytest.fixture
async def least_privilege(postgres_url: str) -> AsyncIterator[tuple[str, str, str]]:
    """A database migrated by the owner (postgres) and a role with only the run-time
    grants of the README; yields (app URL, owner URL, role), drops both after."""
    suffix = uuid.uuid4().hex[:10]
    db, role = f"statestore_lp_{suffix}", f"statestore_app_{suffix}"
    server = postgres_url.rpartition("/")[0]
    admin = await asyncpg.connect(postgres_url)
    await admin.execute(f'CREATE DATABASE "{db}"')
    await admin.execute(f"CREATE ROLE \"{role}\" LOGIN PASSWORD 'app-pw'")
    owner_url = f"{server}/{db}"
    try:
        await migrate.upgrade(owner_url)
        owner = await asyncpg.connect(owner_url)
        try:
            for grant in APP_GRANTS:
                await owner.execute(grant.format(db=db, role=role))
        finally:
            await owner.close()
        host = server.split("@", 1)[1]
        yield f"postgresql://{role}:app-pw@{host}/{db}", owner_url, role
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        await admin.execute(f'DROP ROLE IF EXISTS "{role}"')
        await admin.close()


async def _workload(store: Store) -> None:
    """Everything the library does at run time."""
    cid = f"lp-{uuid.uuid4().hex[:8]}"
    state = AgentState(
        user_input="hi",
        focus_areas=["code"],
        conversation_history=[Message("user", "hi")],
        memory_context=[ContextItem("fact", relevance_score=0.9, context_type="code")],
        metadata={"a": 1},
    )
    await store.save_state(cid, state, user_id="u1", expected_version=0)
    state.conversation_history.append(Message("assistant", "hello"))
    state.metadata["b"] = 2
    await store.save_state(cid, state, user_id="u1")
    await asyncio.gather(
        *(
            store.update_state(
                cid, StatePatch(append_messages=[Message("user", str(i))]), user_id="u1"
            )
            for i in range(10)
        )
    )
    loaded = await store.load_state(cid, user_id="u1")
    await store.update_state(
        cid,
        StatePatch(
            step_count=3,
            add_context=[ContextItem("more", relevance_score=0.2)],
            remove_context=[loaded.memory_context[0].item_id or 0],
            set_metadata={"c": [1]},
            delete_metadata=["a"],
        ),
        user_id="u1",
        expected_version=loaded.version,
    )
    view = await store.load_state(
        cid, LoadOptions(last_messages=3, min_relevance=0.1, context_limit=1), user_id="u1"
    )
    assert view.history_total == 12 and view.step_count == 3
    assert view.metadata == {"b": 2, "c": [1]}
    replaced = AgentState(user_input="again")
    await store.save_state(cid, replaced, user_id="u1")
    assert [c.conversation_id for c in await store.list_conversations(user_id="u1")] == [cid]
    assert await store.delete_state(cid, user_id="u1")


@pytest.mark.postgres
async def test_least_privilege_role_does_everything_at_run_time(
    least_privilege: tuple[str, str, str],
) -> None:
    """After migrations by the owner, a role with only SELECT, INSERT, UPDATE and
    DELETE on the tables runs every operation of the postgres backend, and cannot
    change the schema (its DDL is refused; a migration it runs fails with a
    StateStoreError)."""
    app_url, _, _ = least_privilege
    async with statestore.open_store("postgres", app_url) as store:
        await _workload(store)
    conn = await asyncpg.connect(app_url)
    try:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("CREATE TABLE intruder (x int)")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("DROP TABLE conversation_messages")
    finally:
        await conn.close()
    async with statestore.open_store("postgres", app_url, migrate=True):
        pass  # at head already: nothing to do, so nothing refused
    with pytest.raises(StateStoreError, match="must be owner"):
        await migrate.downgrade(app_url, "base")


@pytest.mark.postgres
async def test_least_privilege_role_runs_legacy_blob_with_its_sequence(
    least_privilege: tuple[str, str, str],
) -> None:
    """legacy-blob additionally needs USAGE on memory_chunks' id sequence (inserts
    draw ids from it): without it a write fails with a StateStoreError, with it the
    whole workload runs."""
    app_url, owner_url, role = least_privilege
    async with statestore.open_store("legacy-blob", app_url) as store:
        with pytest.raises(StateStoreError, match="permission denied"):
            await store.save_state("x", AgentState())
        owner = await asyncpg.connect(owner_url)
        try:
            await owner.execute(LEGACY_GRANT.format(role=role))
        finally:
            await owner.close()
        await _workload(store)


def test_grants_in_readme_match_the_test() -> None:
    """The robustness page lists exactly the grants this file tests."""
    from pathlib import Path

    section = (Path(__file__).parents[2] / "docs" / "robustness.md").read_text()
    for grant in [*APP_GRANTS, LEGACY_GRANT]:
        expected = grant.format(db="statestore", role="statestore_app").replace('"', "")
        assert expected in section, expected
