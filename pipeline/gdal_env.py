"""GDAL's options for reading COGs over HTTP(S), in one place.

The loader (``pipeline.load``) hands :func:`stackstac_env` to ``stackstac.stack``, which
applies it around every open and read on the workers. Local paths are unaffected: these
options only change GDAL's ``/vsicurl/`` (HTTP) file system.

Measured with ``python -m bench.http_reads`` (a pair's band over 1024², see its module
docstring for the numbers): what matters most is that GDAL does not list the "directory"
or probe for sidecar files (``GDAL_DISABLE_READDIR_ON_OPEN``,
``CPL_VSIL_CURL_ALLOWED_EXTENSIONS``), that an open is cached for the other threads that
open the same file (``VSI_CACHE`` at open), and that a transient error is retried quickly
(GDAL's default is no retry, and a 30 s delay when retries are on).

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
