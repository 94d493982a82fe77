"""Which failures a retry can fix (Prefect's ``retry_condition_fn``), and which it cannot."""

from __future__ import annotations

import re

_PERMANENT_HTTP = re.compile(r"\b(400|401|403|404|410)\b")
_TRANSIENT_HTTP = re.compile(r"\b(408|429|500|502|503|504)\b|timed? ?out|temporar",
                             re.IGNORECASE)


def is_transient(exc: BaseException | None) -> bool:
    """True for what a retry with backoff can fix: timeouts, refused or reset connections,
    HTTP 408/429/5xx. False for a bad setting, no scenes, a pair that exists, a missing
    file, HTTP 400/401/403/404/410, and any other error (a bug is not retried)."""
    from .config import ConfigError
    from .search import NoScenesError, StacUnavailableError
    from .writer import BlockFailedError, PairExistsError

    if exc is None:
        return False
    if isinstance(exc, BlockFailedError):
        return is_transient(exc.__cause__)
    if isinstance(exc, ConfigError | PairExistsError | NoScenesError | FileNotFoundError
                  | PermissionError):
        return False
    text = str(exc)
    if _PERMANENT_HTTP.search(text):
        return False
    if isinstance(exc, TimeoutError | ConnectionError | StacUnavailableError):
        return True
    return bool(_TRANSIENT_HTTP.search(text))
