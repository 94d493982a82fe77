"""STAC API access: open a catalogue, build the search, fetch every page of items.

The only module of the search that talks to the network. Failing fast: connect and read
timeouts, one retry, and one ``StacUnavailableError`` naming the URL.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from .plan import SearchParams

CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 20.0
PAGE_SIZE = 100


class StacUnavailableError(RuntimeError):
    """The STAC API cannot be reached, answers with an error, or is not a STAC API."""


def event_utc(params: SearchParams) -> datetime:
    """The event time, timezone-aware (UTC when ``params.event_time`` is naive)."""
    t = params.event_time
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t


def search_interval(params: SearchParams) -> tuple[datetime, datetime]:
    """``[event − days_before, event + days_after]``, both ends included, UTC."""
    t = event_utc(params).astimezone(UTC)
    return t - timedelta(days=params.days_before), t + timedelta(days=params.days_after)


def open_client(url: str, timeout: float | tuple[float, float] = (CONNECT_TIMEOUT_S,
                                                                  READ_TIMEOUT_S)):
    """``pystac_client.Client`` for ``url``, failing fast (``timeout`` seconds, either
    one value or ``(connect, read)``; one retry) with StacUnavailableError naming the URL
    when it cannot be reached or is not a STAC API with item search."""
    from pystac_client import Client, ConformanceClasses
    from pystac_client.stac_api_io import StacApiIO

    try:
        client = Client.open(url, stac_io=StacApiIO(timeout=timeout, max_retries=1))
    except Exception as e:  # refused, timed out, HTTP error, not JSON, not a catalog
        raise StacUnavailableError(f"cannot open a STAC API at {url}: "
                                   f"{type(e).__name__}: {e}") from e
    if not (client.conforms_to(ConformanceClasses.ITEM_SEARCH)
            or client.get_single_link("search") is not None):
        raise StacUnavailableError(f"{url} is a STAC catalog but not a STAC API with item "
                                   "search (no item-search conformance class)")
    return client


def cloud_search_kwargs(conforms: Callable[[Any], bool], max_cloud: float) -> dict:
    """Search arguments that put the cloud limit on the server: a *query* when
    ``conforms(ConformanceClasses.QUERY)``, else a CQL2-JSON *filter* when
    ``conforms(ConformanceClasses.FILTER)``, else none (the limit is applied here)."""
    from pystac_client import ConformanceClasses

    if conforms(ConformanceClasses.QUERY):
        return {"query": {"eo:cloud_cover": {"lte": max_cloud}}}
    if conforms(ConformanceClasses.FILTER):
        return {"filter": {"op": "<=", "args": [{"property": "eo:cloud_cover"}, max_cloud]},
                "filter_lang": "cql2-json"}
    return {}


def _fetch(client, params: SearchParams, **extra: Any) -> list[dict]:
    """All items (dicts, every page) of the search, with ``extra`` search arguments."""
    try:
        search = client.search(collections=[params.collection], bbox=list(params.bbox),
                               datetime=search_interval(params), limit=PAGE_SIZE, **extra)
        return list(search.items_as_dicts())
    except Exception as e:
        raise StacUnavailableError(f"the search failed at {params.stac_url}: "
                                   f"{type(e).__name__}: {e}") from e
