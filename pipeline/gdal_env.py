"""GDAL's options for reading COGs over HTTP(S), in one place.

The loader (``pipeline.load``) hands :func:`stackstac_env` to ``stackstac.stack``, which
applies it around every open and read on the workers. Local paths are unaffected: these
options only change GDAL's ``/vsicurl/`` (HTTP) file system.

Measured with ``python -m bench.http_reads`` (one pair's band over a 1024² window of
4096² Sentinel-2-like COGs, loopback server with 20 ms per answer, median of 5 fresh
processes, busy 2-core machine): GDAL's defaults make 30 requests, 19 of them 404s
(a listing of the "directory" and HEADs for ``.aux.xml``/``.msk``/``.xml`` sidecars),
in 0.98 s; these options make 12 requests, none 404, in 0.54 s. Dropping
``GDAL_DISABLE_READDIR_ON_OPEN`` brings back the listing (13 requests, one 404). The
other options changed neither the count (10-13 from run to run, as two threads race to
open) nor the time beyond that noise at this size; they are kept because they cost
nothing and match stackstac's defaults (multi-range, merged ranges, ``VSI_CACHE`` at
open) or guard against probes (allowed extensions; a query string after ``.tif`` is
fine). The retry options are for correctness, not speed: GDAL's default is no retry,
and a COG header whose range request fails twice then reads as "not recognized as being
in a supported file format" (``tests/pipeline/test_http_cogs.py``).

An option already set in the process environment wins over the value here, so an
operator can tune one (``GDAL_HTTP_MAX_RETRY=10``) without code.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

# Options applied to every open and read.
ALWAYS: Mapping[str, str] = {
    # the "directory" of a URL cannot be listed: do not try, and do not probe for
    # .aux.xml/.msk/.ovr sidecars (each one a request that answers 404)
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
    "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".tif,.tiff,.TIF,.TIFF",
    # transient HTTP errors (429, 500, 502, 503, 504, timeouts) are retried, with a
    # delay that starts at GDAL_HTTP_RETRY_DELAY seconds and roughly doubles each time
    "GDAL_HTTP_MAX_RETRY": "5",
    "GDAL_HTTP_RETRY_DELAY": "0.5",
    # the tiles of one read go in one request where the server allows it, and tiles
    # that follow each other in the file are fetched in one range
    "GDAL_HTTP_MULTIRANGE": "YES",
    "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES",
}
# Extra options while opening: cache the header, so that the other threads of a worker
# that open the same file (stackstac opens one dataset per thread) read it from memory.
OPEN: Mapping[str, str] = {"VSI_CACHE": "TRUE"}
# Extra options while reading pixels: no block cache of data that is read once.
READ: Mapping[str, str] = {"VSI_CACHE": "FALSE"}


def _with_environment(options: Mapping[str, str]) -> dict[str, str]:
    """``options``, each replaced by the process environment's value where one is set."""
    return {key: os.environ.get(key, value) for key, value in options.items()}


def gdal_options() -> dict[str, str]:
    """The options for reading pixels (``ALWAYS`` + ``READ``), after the environment's
    overrides; for ``rasterio.Env(**gdal_options())`` around reads outside stackstac."""
    return _with_environment({**ALWAYS, **READ})


def stackstac_env():
    """A ``stackstac.LayeredEnv`` with ``ALWAYS``, ``OPEN`` and ``READ`` (after the
    environment's overrides), for ``stackstac.stack(gdal_env=...)``."""
    import stackstac

    return stackstac.LayeredEnv(always=_with_environment(ALWAYS),
                                open=_with_environment(OPEN), read=_with_environment(READ))
