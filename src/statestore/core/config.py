"""Which backend and URL to use: arguments first, then the environment, then the
embedded default (SQLite in ``./statestore.db``).

Environment: ``STATESTORE_BACKEND`` (a backend name) and ``STATESTORE_URL``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from .errors import ValidationError

__all__ = ["DEFAULT_BACKEND", "DEFAULT_SQLITE_URL", "StoreConfig", "mask_url", "resolve_config"]

DEFAULT_BACKEND = "sqlite"
DEFAULT_SQLITE_URL = "sqlite:///statestore.db"

_SCHEME_BACKENDS = {"sqlite": "sqlite", "postgresql": "postgres", "postgres": "postgres"}


@dataclass(frozen=True, slots=True)
class StoreConfig:
    backend: str
    url: str | None


def resolve_config(name: str | None = None, url: str | None = None) -> StoreConfig:
    """Pick the backend name and URL. A URL without a name picks the backend from its
    scheme (``postgresql://`` → postgres, ``sqlite://`` → sqlite)."""
    name = name or os.environ.get("STATESTORE_BACKEND") or None
    url = url or os.environ.get("STATESTORE_URL") or None
    if name is None:
        name = backend_for_url(url) if url else DEFAULT_BACKEND
    if url is None and name == DEFAULT_BACKEND:
        url = DEFAULT_SQLITE_URL
    return StoreConfig(name, url)


def url_scheme(url: str) -> str:
    """The database part of a URL's scheme: ``postgresql+asyncpg://`` → ``postgresql``."""
    try:
        scheme = urlsplit(url).scheme if "://" in url else ""
    except (ValueError, TypeError):
        scheme = ""
    if not scheme:
        raise ValidationError("url", f"is not a database URL: {mask_url(str(url))!r}")
    return scheme.split("+", 1)[0].lower()


def backend_for_url(url: str) -> str:
    scheme = url_scheme(url)
    try:
        return _SCHEME_BACKENDS[scheme]
    except KeyError:
        raise ValidationError("url", f"no built-in backend for the scheme {scheme!r}") from None


_QUERY_PASSWORD = re.compile(r"((?:^|&)password=)[^&]*", re.IGNORECASE)


def mask_url(url: str) -> str:
    """The URL with its password replaced by ``***``, safe for messages and logs."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    secret_query = _QUERY_PASSWORD.search(parts.query) is not None
    if parts.password is None and not secret_query:
        return url
    if parts.password is not None:
        netloc = parts.netloc.rsplit("@", 1)
        user = parts.username or ""
        parts = parts._replace(netloc=f"{user}:***@{netloc[-1]}")
    if secret_query:  # libpq and asyncpg also take ?password=...
        parts = parts._replace(query=_QUERY_PASSWORD.sub(r"\1***", parts.query))
    return urlunsplit(parts)
