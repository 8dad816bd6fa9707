"""The public surface stays honest: ``statestore.__all__`` is exact, the exceptions
have the base classes DESIGN.md promises, every hook is documented and tested."""

import inspect
import re
from pathlib import Path

import pluggy
import pytest

import statestore
from statestore.core import errors, hookspecs

ROOT = Path(__file__).resolve().parents[1]

# DESIGN.md: "Every public name, the exceptions included, is importable from statestore".
DESIGN_NAMES = {
    "open_store",
    "AgentState",
    "Message",
    "ContextItem",
    "LoadOptions",
    "StatePatch",
    "StorageBackend",
    "SaveResult",
    "ConversationInfo",
    "StateStoreError",
    "ValidationError",
    "ConversationNotFound",
    "VersionConflict",
    "BackendNotFound",
    "BackendUnavailable",
    "SchemaOutOfDate",
    "hookimpl",
}


def test_all_names_are_importable() -> None:
    """Every name in __all__ exists on the package, once."""
    assert len(statestore.__all__) == len(set(statestore.__all__))
    for name in statestore.__all__:
        assert hasattr(statestore, name), name


def test_all_is_exact() -> None:
    """Every public class, function or object defined in statestore and reachable from
    the package root is in __all__ (nothing exported by accident, nothing missing)."""
    public = set()
    for name, value in vars(statestore).items():
        if name.startswith("_") or inspect.ismodule(value):
            continue
        if inspect.isclass(value) or inspect.isfunction(value) or hasattr(value, "__wrapped__"):
            module = value.__module__
        else:  # an instance: UNSET, the hookimpl marker
            module = type(value).__module__
        if module.startswith("statestore") or isinstance(value, pluggy.HookimplMarker):
            public.add(name)
    assert public == set(statestore.__all__)


def test_design_names_are_exported() -> None:
    """The public API of DESIGN.md and every exception are in __all__."""
    assert set(statestore.__all__) >= DESIGN_NAMES
    assert set(statestore.__all__) >= set(errors.__all__)


def test_exception_base_classes() -> None:
    """One root; ValidationError is a ValueError, ConversationNotFound a KeyError,
    BackendNotFound a LookupError."""
    for name in errors.__all__:
        assert issubclass(getattr(statestore, name), statestore.StateStoreError), name
    assert issubclass(statestore.ValidationError, ValueError)
    assert issubclass(statestore.ConversationNotFound, KeyError)
    assert issubclass(statestore.BackendNotFound, LookupError)
    assert issubclass(statestore.StateStoreError, Exception)


def test_caught_as_builtin_exceptions() -> None:
    """Callers catching ValueError / KeyError catch statestore's errors."""
    with pytest.raises(ValueError, match="step_count"):
        statestore.StatePatch(step_count=-1)
    with pytest.raises(KeyError):
        raise statestore.ConversationNotFound("c")
    assert str(statestore.ConversationNotFound("c")) == "conversation 'c' not found"


def test_public_names_have_docstrings() -> None:
    """Every exported class and function says what it is for."""
    for name in statestore.__all__:
        value = getattr(statestore, name)
        if inspect.isclass(value) or callable(value):
            assert inspect.getdoc(value), name


def _hookspecs() -> dict[str, object]:
    return {
        name: value
        for name, value in vars(hookspecs).items()
        if name.startswith("statestore_") and callable(value)
    }


def test_every_hookspec_is_documented() -> None:
    """Every hook specification carries a docstring saying how results combine."""
    specs = _hookspecs()
    assert "statestore_register_backends" in specs and "statestore_operation_done" in specs
    for name, spec in specs.items():
        assert hasattr(spec, "statestore_spec"), f"{name} is not marked @hookspec"
        doc = inspect.getdoc(spec) or ""
        assert len(doc) > 40, f"{name} needs a docstring"


def test_every_hookspec_is_exercised_by_a_test() -> None:
    """Every hook specification is implemented or called by some test (the contract
    suite, the tests, or the example backend's tests)."""
    sources = [
        *(ROOT / "tests").rglob("*.py"),
        *(ROOT / "src/statestore/testing/contract").rglob("*.py"),
        *(ROOT / "examples").rglob("tests/*.py"),
    ]
    text = "\n".join(
        p.read_text(encoding="utf-8") for p in sources if p.name != "test_public_api.py"
    )
    untested = [name for name in _hookspecs() if not re.search(rf"\b{name}\b", text)]
    assert not untested, f"hooks no test exercises: {untested}"


def test_hookimpl_marks_statestore_hooks() -> None:
    """statestore.hookimpl is the marker of the "statestore" project."""
    assert statestore.hookimpl.project_name == "statestore"
