"""Tiled Dask inference is seamless, and chunked log-TV matches the whole mosaic."""

import numpy as np
import pytest
import rasterio
import xarray as xr

from model.denoise import LogTVConfig, logtv_denoise
from model.inference import get_model, infer_mosaic, scene_stats
from model.synthetic import make_pair
from pipeline.demo import TEXTURE
from pipeline.denoise import denoise_chunked
from pipeline.infer import InferenceConfig, displacement_raw


@pytest.fixture(scope="module")
def pair_1024():
    with rasterio.open(TEXTURE) as src:
        tex = src.read(1).astype(np.float64)
    tex = np.concatenate([tex, tex[::-1]], axis=0)
    tex = np.concatenate([tex, tex[:, ::-1]], axis=1)[:1056, :1056]  # 1024 + margins
    tex = (tex - tex.mean()) / tex.std()
    return make_pair(tex, np.random.default_rng(4), (1024, 1024), "small",
                     temporal_change=True)


def _as_dataset(pair, chunk):
    coords = {"y": np.arange(1024) * -30.0, "x": np.arange(1024) * 30.0}
    ds = xr.Dataset({"pre": (("y", "x"), pair.pre), "post": (("y", "x"), pair.post)},
                    coords=coords)
    return ds.chunk({"y": chunk, "x": chunk})


@pytest.mark.parametrize("chunk", [256])
def test_tiled_equals_whole_image(pair_1024, chunk):
    import torch

    model = get_model(None, torch.device("cpu"))
    stats = (scene_stats(pair_1024.pre), scene_stats(pair_1024.post))
    whole = infer_mosaic(model, pair_1024.pre, pair_1024.post, stats, tile=1024, halo=0)
    cfg = InferenceConfig(chunk=chunk, tile=chunk, halo=64)
    tiled = displacement_raw(_as_dataset(pair_1024, chunk), stats, cfg).compute(
        scheduler="threads").values
    assert tiled.shape == whole.shape == (2, 1024, 1024)
    rms = float(np.sqrt(np.mean((tiled - whole) ** 2)))
    assert rms < 0.01, rms
    # and the field is not trivially zero: the model measures the displacement
    assert np.abs(whole).mean() > 0.1


def test_chunked_denoise_matches_the_whole_mosaic(pair_1024):
    rng = np.random.default_rng(0)
    noisy = pair_1024.flow + rng.normal(0, 0.1, pair_1024.flow.shape).astype(np.float32)
    cfg = LogTVConfig()
    whole = logtv_denoise(noisy, cfg)
    field = xr.DataArray(noisy, dims=("component", "y", "x")).chunk(
        {"component": 2, "y": 256, "x": 256})
    chunked = denoise_chunked(field, cfg, halo=32).compute(scheduler="threads").values
    diff = np.abs(chunked - whole)
    # tolerance: 0.01 px RMS, 0.05 px max (input noise is 0.1 px)
    assert np.sqrt(np.mean(diff**2)) < 0.01 and diff.max() < 0.05, (diff.max(),)


def test_gpu_annotation_follows_worker_resources():
    from distributed import Client, LocalCluster

    from pipeline.infer import workers_have_gpus

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                      dashboard_address=None, resources={"GPU": 1}) as cluster, \
            Client(cluster) as client:
        assert workers_have_gpus(client)
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        assert not workers_have_gpus(client)
    assert not workers_have_gpus(None)
