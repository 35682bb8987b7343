"""Secrets never leave the process: store URLs (Optuna storage, MLflow tracking) as they are shown
or stored anywhere (logs, error lines, MLflow params and tags, cards, the study's stored config)
have their password and secret query values masked.

`mask_url` is the one helper for that; every URL it masked leaves its secrets in a per-process
set, so `scrub` can also take them out of any text built from a library's message (an error
line quoting the URL it failed to open).
"""

from __future__ import annotations

import re
from urllib.parse import quote, unquote

MASK = "***"
# query parameters whose values are credentials (`?password=`, `?token=`, `?api_key=`, ...)
SECRET_QUERY = re.compile(r"(pass|pwd|token|secret|key|auth|credential|signature|sig)", re.I)
_SECRETS: set[str] = set()  # the secrets seen by mask_url in this process (see scrub)


def mask_url(url: str | None) -> str | None:
    """`url` with its password (`scheme://user:PASSWORD@host`) and the values of secret-looking
    query parameters replaced by `***`; a URL without them, a plain path or None unchanged.
    Rendered as SQLAlchemy's `make_url(url).render_as_string(hide_password=True)` where that
    parses the same password, else by splitting at the last `@` of the authority (an unescaped
    `@` or `/` in a password never leaves a piece of it)."""
    if not url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    head, sep, query = rest.partition("?")
    local = scheme.split("+")[0].lower() in ("sqlite", "file")
    at = -1 if local else head.rfind("@")
    if at >= 0 and ":" in head[:at]:
        user, password = head[:at].split(":", 1)
        _remember(password)
        masked = _sqlalchemy_masked(url, unquote(password))
        if masked is not None:
            return _mask_query(masked)
        head = f"{user}:{MASK}{head[at:]}"
    return f"{scheme}://{head}{sep}{_mask_query(query) if sep else ''}"


def _sqlalchemy_masked(url: str, password: str) -> str | None:
    """SQLAlchemy's rendering of `url` with the password hidden, when it parses `password` as
    the URL's password (None otherwise, or when it cannot parse the URL)."""
    try:
        from sqlalchemy.engine import make_url

        parsed = make_url(url)
    except Exception:  # not a URL SQLAlchemy reads (an MLflow scheme): split by hand
        return None
    if parsed.password is None or str(parsed.password) != password:
        return None
    return parsed.render_as_string(hide_password=True)


def _mask_query(query: str) -> str:
    """A query string (or a URL ending in one) with secret-looking parameters' values masked."""
    head, sep, tail = query.rpartition("?")
    parts = []
    for item in tail.split("&"):
        key, eq, value = item.partition("=")
        if eq and value and SECRET_QUERY.search(unquote(key)):
            _remember(value)
            value = MASK
        parts.append(f"{key}{eq}{value}")
    return f"{head}{sep}{'&'.join(parts)}"


def _remember(secret: str) -> None:
    """Keep `secret` (as written, unescaped and escaped) for `scrub`; too short ones are not kept
    (they would mask ordinary words)."""
    for form in {secret, unquote(secret), quote(unquote(secret), safe="")}:
        if len(form) >= 3 and form != MASK:
            _SECRETS.add(form)


def scrub(text: str, *urls: str | None) -> str:
    """`text` with every URL of `urls` masked (see mask_url) and every secret mask_url has seen in
    this process replaced by `***`: for messages that quote a URL or a library's error text."""
    for url in urls:
        if url:
            text = text.replace(url, mask_url(url))
    for secret in sorted(_SECRETS, key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text


def watch(*urls: str | None) -> None:
    """Learn the secrets of `urls` (as mask_url does) so that `scrub` removes them from any text,
    also from messages written before a URL was masked (the CLI's --storage / --tracking-uri and
    $MLFLOW_TRACKING_URI, seen at start-up)."""
    for url in urls:
        mask_url(url)


def mask_config(values: dict) -> dict:
    """A copy of a config's mapping with its store URLs (`storage`, `tracking_uri`, `address`)
    masked: what is stored with a study and logged to MLflow."""
    return {
        k: mask_url(v) if k in ("storage", "tracking_uri", "address") and isinstance(v, str) else v
        for k, v in values.items()
    }


def is_masked(url: str | None) -> bool:
    """Whether `url` is a masked one (its password or a query value is `***`): a stored URL that
    cannot be used to connect."""
    return bool(url) and (f":{MASK}@" in url or f"={MASK}" in url)
