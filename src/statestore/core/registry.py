"""The plugin manager, backend discovery and ``open_store()``.

A ``Registry`` is built on demand (never at import): it loads the ``statestore``
entry-point group, where the built-in backends are registered exactly as a third-party
backend would be, and collects what ``statestore_register_backends`` returns.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import pluggy

from . import hookspecs
from .backend import StorageBackend
from .config import resolve_config
from .errors import BackendNotFound, StateStoreError, ValidationError
from .hookspecs import BackendSpec
from .store import Store

__all__ = ["BackendInfo", "Registry", "default_registry", "open_store"]

ENTRY_POINT_GROUP = "statestore"


@dataclass(frozen=True, slots=True)
class BackendInfo:
    """A backend found by the registry, as ``statestore backends`` lists it."""

    name: str
    description: str
    package: str | None
    spec: BackendSpec


class Registry:
    """Plugins and the backends they offer."""

    def __init__(self) -> None:
        self.plugin_manager = pluggy.PluginManager(ENTRY_POINT_GROUP)
        self.plugin_manager.add_hookspecs(hookspecs)
        self._backends: dict[str, BackendInfo] | None = None

    @classmethod
    def from_entry_points(cls) -> Registry:
        """A registry with every installed plugin (the built-in backends included)."""
        registry = cls()
        registry.plugin_manager.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
        return registry

    @property
    def hook(self) -> Any:
        return self.plugin_manager.hook

    def register(self, plugin: object, name: str | None = None) -> None:
        """Add a plugin object (backends, an operation observer, ...)."""
        self.plugin_manager.register(plugin, name)
        self._backends = None

    def backends(self) -> dict[str, BackendInfo]:
        """Every backend offered by a registered plugin, by name."""
        if self._backends is None:
            packages = {
                id(plugin): dist.project_name
                for plugin, dist in self.plugin_manager.list_plugin_distinfo()
            }
            found: dict[str, BackendInfo] = {}
            for impl in self.plugin_manager.hook.statestore_register_backends.get_hookimpls():
                specs: list[BackendSpec] = impl.function()  # type: ignore[assignment]
                for spec in specs:
                    if spec.name in found:
                        raise StateStoreError(
                            f"two plugins register a backend named {spec.name!r} "
                            f"({found[spec.name].package} and {packages.get(id(impl.plugin))})"
                        )
                    found[spec.name] = BackendInfo(
                        spec.name, spec.description, packages.get(id(impl.plugin)), spec
                    )
            self._backends = found
        return self._backends

    def get(self, name: str) -> BackendInfo:
        backends = self.backends()
        try:
            return backends[name]
        except KeyError:
            raise BackendNotFound(name, list(backends)) from None

    def open_backend(
        self,
        name: str | None = None,
        url: str | None = None,
        *,
        migrate: bool | None = None,
        **options: Any,
    ) -> StorageBackend:
        """The unopened backend ``name`` alone, for a backend built on others (dual);
        users hold a Store (``open_store``)."""
        if migrate is not None and type(migrate) is not bool:
            raise ValidationError("migrate", "must be True, False or None")
        config = resolve_config(name, url)
        info = self.get(config.backend)
        try:
            backend: StorageBackend = info.spec.factory(
                config.url, migrate=migrate, registry=self, **options
            )
        except TypeError as exc:
            if not options:
                raise
            # An option the backend does not take (a misspelling): a constructor's
            # "unexpected keyword argument".
            raise ValidationError(
                "options", f"the {config.backend} backend refused {sorted(options)}: {exc}"
            ) from exc
        return backend

    def open_store(
        self,
        name: str | None = None,
        url: str | None = None,
        *,
        migrate: bool | None = None,
        **options: Any,
    ) -> Store:
        """A Store over the backend ``name`` (see ``statestore.open_store``), reporting
        its operations to this registry's plugins."""
        return Store(self.open_backend(name, url, migrate=migrate, **options), hook=self.hook)


@functools.cache
def default_registry() -> Registry:
    """The registry of installed plugins, built on first use and then reused."""
    return Registry.from_entry_points()


def open_store(
    name: str | None = None,
    url: str | None = None,
    *,
    migrate: bool | None = None,
    **options: Any,
) -> Store:
    """Open a store by backend name; use it as ``async with open_store(...) as store``.

    ``name`` is a name from the ``statestore`` entry points (``statestore backends``
    lists them); ``url`` is optional (a plain ``postgresql://`` or ``sqlite:///`` URL is
    fine). With neither: ``STATESTORE_BACKEND`` and ``STATESTORE_URL``, else SQLite in
    ``./statestore.db``. ``migrate=None`` is the backend's default (SQLite applies
    migrations on open, PostgreSQL only checks). Other keyword options go to the
    backend (e.g. ``pool_size`` for postgres). Raises BackendNotFound for an unknown
    name.
    """
    return default_registry().open_store(name, url, migrate=migrate, **options)
