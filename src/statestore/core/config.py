"""Which backend and URL to use: arguments first, then the environment, then the
embedded default (SQLite in ``./statestore.db``).

Environment: ``STATESTORE_BACKEND`` (a backend name) and ``STATESTORE_URL``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from .errors import ValidationError

__all__ = [
    "DEFAULT_BACKEND",
    "DEFAULT_SQLITE_URL",
    "StoreConfig",
    "check_server_url",
    "mask_url",
    "resolve_config",
]

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


def check_server_url(url: str) -> None:
    """Raise ValidationError unless the server part of ``url`` parses. A ``/``, ``#``
    or ``?`` left unescaped in a password cuts that part short: the driver then fails
    on a port that is not a number, or connects elsewhere as someone else."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not one
    except ValueError:
        readable = False
    else:
        readable = "@" not in parts.path  # the rest of a password cut short
    if not readable:
        raise ValidationError(
            "url",
            f"cannot be read as a server URL: {mask_url(url)!r} (a port must be a number "
            "from 0 to 65535; percent-encode '/', '#', '?' and '@' in a user name or "
            "password: %2F, %23, %3F, %40)",
        )


_QUERY_PASSWORD = re.compile(r"((?:^|&)password=)[^&]*", re.IGNORECASE)


def mask_url(url: str) -> str:
    """The URL with its password replaced by ``***``, safe for messages and logs.

    The password is whatever stands between the user name's ``:`` and the last ``@``
    of the server part, found without parsing the URL: a password with an unescaped
    ``/``, ``#``, ``?`` or ``@``, or a URL missing its ``scheme://``, is masked too."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    # The credentials end at the last "@" before the query (a password may hold "?").
    before_query = rest.partition("?")[0]
    userinfo, at, _ = (before_query if "@" in before_query else rest).rpartition("@")
    if at and ":" in userinfo:
        rest = f"{userinfo.split(':', 1)[0]}:***@{rest[len(userinfo) + 1 :]}"
    if "?" in rest:  # libpq and asyncpg also take ?password=...
        path, _, query = rest.partition("?")
        rest = path + "?" + _QUERY_PASSWORD.sub(r"\1***", query)
    return f"{scheme}{sep}{rest}"
