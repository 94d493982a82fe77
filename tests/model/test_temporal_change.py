"""Realistic temporal change: each effect, on its own switch, does what it claims."""

from dataclasses import replace

import numpy as np
import pytest

from model.synthetic import make_pair
from model.temporal_change import ParcelMosaic, RealisticChange, apply_realistic_change

# every effect off; each test switches on the one it checks
OFF = RealisticChange(parcel_prob=0.0, cloud_prob=0.0, haze_prob=0.0, water_prob=0.0,
                      striping_prob=0.0, compression_prob=0.0, gain=(1.0, 1.0),
                      offset=(0.0, 0.0), snr=(1e9, 1e9), saturation=(1e9, 1e9),
                      reflectance_mean=(0.2, 0.2), reflectance_std=(0.02, 0.02))
PARCELS = replace(OFF, parcel_prob=1.0, boundary_prob=0.0, striped_prob=0.0,
                  texture_change_prob=0.0)


def _identity(h=96, w=96):
    rows, cols = np.mgrid[0:h, 0:w].astype(float)
    return np.zeros((2, h, w), np.float32), (rows, cols)


def _flat_pair(h=96, w=96):
    """A pair whose texture is tiny white noise: parcel structure dominates."""
    rng = np.random.default_rng(0)
    img = rng.normal(0, 1, (h, w)).astype(np.float32)
    return img, img.copy()


def test_everything_off_leaves_the_pair_as_it_was(texture):
    pre = texture[:96, :96].astype(np.float32)
    flow, ground = _identity()
    a, b, invalid, info = apply_realistic_change(pre, pre.copy(), np.random.default_rng(0),
                                                 OFF, flow, ground)
    np.testing.assert_allclose(a, pre, atol=1e-4)
    np.testing.assert_allclose(b, pre, atol=1e-4)
    assert not invalid.any() and info == {}


def test_parcels_are_voronoi_cells_with_straight_shared_edges():
    m = ParcelMosaic.random((96, 96), np.random.default_rng(1), size=20.0, elongation=2.0)
    rows, cols = np.mgrid[0:96, 0:96].astype(float)
    first, second, dist = m.locate(rows, cols)
    assert 10 < len(np.unique(first)) < 100
    # two neighbouring parcels meet along one straight line: the signed distance to
    # their shared edge (+ on one side, - on the other) is an affine function of the
    # pixel position with a unit gradient, i.e. a straight edge in pixel units
    checked = 0
    for a, b in sorted({(x, y) for x, y in zip(first.ravel(), second.ravel(), strict=True)}):
        side_a, side_b = (first == a) & (second == b), (first == b) & (second == a)
        if side_a.sum() < 10 or side_b.sum() < 10:
            continue
        sel = side_a | side_b
        signed = np.where(side_a, dist, -dist)[sel]
        design = np.stack([rows[sel], cols[sel], np.ones(sel.sum())], 1)
        coef, *_ = np.linalg.lstsq(design, signed, rcond=None)
        assert np.abs(design @ coef - signed).max() < 1e-6
        assert np.hypot(coef[0], coef[1]) == pytest.approx(1.0, abs=1e-6)
        checked += 1
    assert checked >= 10
    # the distance is to the edge itself: a parcel changes across it, and only there
    step = first[:, 1:] != first[:, :-1]
    assert (np.minimum(dist[:, 1:], dist[:, :-1])[step] <= 1.0 + 1e-9).all()


def test_parcels_move_with_the_ground(texture):
    """The mosaic is a ground object: post sees it at each pixel's ground position, so
    with parcels that do not change, warping post back by the true shift lines its
    parcel edges up with pre's; drawn on the post grid instead, they would not."""
    import torch

    from model.warp import warp

    clean = make_pair(texture, np.random.default_rng(20), (128, 128), "translation")
    dx, dy = clean.params["dx"], clean.params["dy"]
    assert np.hypot(dx, dy) > 1.0
    rows, cols = np.mgrid[0:128, 0:128].astype(float)
    same = replace(PARCELS, changed_share=(0.0, 0.0), parcel_size=(12.0, 12.0),
                   boundary_prob=1.0, striped_prob=0.5)
    errs = []
    for ground in ((rows - dy, cols - dx), (rows, cols)):  # right, then post-grid
        a, b, _, _ = apply_realistic_change(clean.pre, clean.post, np.random.default_rng(21),
                                            same, clean.flow, ground)
        assert np.abs(a - clean.pre).mean() > 0.3 * a.std()  # strongly restyled
        warped = warp(torch.from_numpy(b)[None, None], torch.from_numpy(clean.flow)[None])
        errs.append(np.abs(warped[0, 0].numpy() - a)[12:-12, 12:-12].mean() / a.std())
    assert errs[0] < 0.05 < errs[1]


def test_parcel_change_is_parcel_wise_and_contrast_can_invert():
    """pre and post restyled from one texture: within each parcel post = g·pre + o for
    one (g, o); g differs between parcels, and is negative for some (inverted)."""
    rng = np.random.default_rng(4)
    tex = rng.normal(0, 1, (96, 96)).astype(np.float32)
    flow, ground = _identity()
    change = replace(PARCELS, invert_prob=0.5, parcel_size=(24.0, 24.0),
                     parcel_elongation=(1.0, 1.0))
    a, b, _, _ = apply_realistic_change(tex, tex.copy(), np.random.default_rng(5), change,
                                        flow, ground)
    # fit post = g * pre + o on 8x8 blocks well inside parcels: blocks where the fit is
    # exact (a parcel interior) give one g per parcel
    gains = []
    for r in range(4, 88, 8):
        for c in range(4, 88, 8):
            x, y = a[r:r + 8, c:c + 8].ravel(), b[r:r + 8, c:c + 8].ravel()
            g, o = np.polyfit(x, y, 1)
            if np.abs(y - (g * x + o)).max() < 1e-3 * (np.abs(y).max() + 1):
                gains.append(g)
    gains = np.array(gains)
    assert len(gains) > 20
    assert np.ptp(gains) > 0.5  # parcels change differently
    assert (gains < -0.05).any()  # contrast inversion
    assert (np.abs(gains - 1) < 1e-3).any()  # unchanged parcels stay the same


def test_inversion_frequency_follows_its_probability():
    from model.temporal_change import _parcel_states

    for p in (0.0, 0.5):
        c = replace(PARCELS, invert_prob=p, changed_share=(1.0, 1.0))
        states, n = _parcel_states(4000, np.random.default_rng(6), c)
        assert n == 4000
        changed = states[0].gain != states[1].gain
        flipped = np.sign(states[0].gain) != np.sign(states[1].gain)
        assert changed.all()
        assert abs(flipped.mean() - p) < 0.03


def _stripe_energy(img: np.ndarray) -> float:
    """Share of the spectral energy at periods of 2.4-8.5 px."""
    spec = np.abs(np.fft.rfft2(img - img.mean())) ** 2
    fy, fx = np.meshgrid(np.fft.fftfreq(img.shape[0]), np.fft.rfftfreq(img.shape[1]),
                         indexing="ij")
    f = np.hypot(fx, fy)
    return float(spec[(f > 1 / 8.5) & (f < 1 / 2.4)].sum() / spec.sum())


def test_texture_change_adds_stripes_or_smooths_parcels():
    """A smooth texture, parcels changing only their texture: ploughing stripes add
    energy at 2.5-8 px periods in the changed image, smoothing removes fine detail."""
    from scipy import ndimage

    rng = np.random.default_rng(7)
    tex = ndimage.gaussian_filter(rng.normal(0, 1, (128, 128)), 4).astype(np.float32)
    flow, ground = _identity(128, 128)
    flat = replace(PARCELS, changed_share=(1.0, 1.0), parcel_offset=0.0,
                   parcel_gain=(1.0, 1.0), change_offset=0.0, change_gain=(1.0, 1.0),
                   invert_prob=0.0, parcel_size=(20.0, 20.0))
    a0, b0, _, _ = apply_realistic_change(tex, tex.copy(), np.random.default_rng(8), flat,
                                          flow, ground)
    np.testing.assert_allclose(b0, a0, atol=1e-4)  # no texture change: nothing differs
    a, b, _, _ = apply_realistic_change(tex, tex.copy(), np.random.default_rng(8),
                                        replace(flat, texture_change_prob=1.0), flow, ground)
    assert _stripe_energy(a) + _stripe_energy(b) > 3 * (_stripe_energy(a0)
                                                         + _stripe_energy(b0))
    # and some parcels got smoothed: local detail (Laplacian) vanishes in places
    lap0 = np.abs(ndimage.laplace(ndimage.gaussian_filter(a0, 1)))
    lap = np.minimum(np.abs(ndimage.laplace(ndimage.gaussian_filter(a, 1))),
                     np.abs(ndimage.laplace(ndimage.gaussian_filter(b, 1))))
    assert np.mean(lap < 0.3 * lap0) > 0.1


def test_clouds_are_bright_and_not_valid_and_shadows_are_dark(texture):
    pre = texture[:128, :128].astype(np.float32)
    sd = 0.02  # reflectance per texture std (OFF's scene); ground 0.2 +- 0.08
    flow, ground = _identity(128, 128)
    change = replace(OFF, cloud_prob=1.0, cloud_cover=(0.2, 0.2), shadow_shift=(12, 12),
                     shadow_darkening=(0.6, 0.6), cloud_reflectance=(0.7, 0.7))
    a, b, invalid, info = apply_realistic_change(pre, pre.copy(), np.random.default_rng(9),
                                                 change, flow, ground)
    assert info["cloud"] == ["pre", "post"]
    assert 0.05 < invalid.mean() < 0.4
    for img in (a, b):
        rise = (img - pre) * sd  # reflectance
        assert (rise > 0.05).mean() > 0.05  # bright clouds
        assert (rise < -0.05).mean() > 0.02  # dark shadows, off the clouds
        # transmission below 1/2 (not valid) is a rise of more than 0.29 at most
        assert invalid[rise > 0.3].all()
    # not valid only where one of the images is brighter (under its cloud)
    assert (np.maximum(a, b) - pre > 0.07 / sd)[invalid].all()


def test_a_post_cloud_hides_the_pre_pixels_whose_ground_it_covers(texture):
    """A cloud in post at y hides the ground point x with x + d(x) = y: with a uniform
    shift of 6 px east the flagged pre pixels are the post cloud moved 6 px west."""
    h = w = 96
    sd = 0.02
    pre = texture[:h, :w].astype(np.float32)
    rows, cols = np.mgrid[0:h, 0:w].astype(float)
    flow = np.stack([np.full((h, w), 6.0), np.zeros((h, w))]).astype(np.float32)
    change = replace(OFF, cloud_prob=0.5, cloud_cover=(0.2, 0.2), shadow_darkening=(0, 0),
                     cloud_reflectance=(0.7, 0.7))
    for seed in range(50):  # a pair with a cloud in post only
        _, b, invalid, info = apply_realistic_change(
            pre, pre.copy(), np.random.default_rng(seed), change, flow, (rows, cols - 6.0))
        if info.get("cloud") == ["post"]:
            break
    else:
        pytest.fail("no post-only cloud drawn")
    thick = (b - pre) * sd > 0.3  # in post
    assert thick.mean() > 0.02
    # pre pixel (r, c) is seen at post pixel (r, c + 6)
    assert invalid[:, :-6][thick[:, 6:]].all()
    assert not invalid[:, :-6][(b - pre)[:, 6:] * sd < 0.05].any()


def test_open_water_is_dark_and_not_valid(texture):
    pre = texture[:96, :96].astype(np.float32)
    flow, ground = _identity()
    change = replace(OFF, water_prob=1.0, open_water_prob=1.0, water_cover=(0.15, 0.15),
                     water_edge=(10.0, 10.0))
    a, b, invalid, info = apply_realistic_change(pre, pre.copy(), np.random.default_rng(10),
                                                 change, flow, ground)
    wet, dry = (a, b) if info["water"] == "pre" else (b, a)
    assert 0.03 < invalid.mean() < 0.25
    assert wet[invalid].mean() < pre[invalid].mean() - 3 * pre.std()
    def spread(x):
        return np.median(np.abs(x - np.median(x)))

    assert spread(wet[invalid]) < 0.1 * spread(pre[invalid])  # flat water
    np.testing.assert_allclose(dry, pre, atol=1e-4)  # the other date is dry


def test_wet_soil_darkens_but_stays_valid(texture):
    pre = texture[:96, :96].astype(np.float32)
    flow, ground = _identity()
    change = replace(OFF, water_prob=1.0, open_water_prob=0.0, water_cover=(0.15, 0.15),
                     wet_darkening=(0.4, 0.4), water_edge=(10.0, 10.0))
    a, b, invalid, info = apply_realistic_change(pre, pre.copy(), np.random.default_rng(10),
                                                 change, flow, ground)
    wet = a if info["wet_soil"] == "pre" else b
    assert not invalid.any()
    darker = wet < pre - 0.5 * pre.std()
    assert 0.05 < darker.mean() < 0.25
    # multiplicative: the texture survives, at 0.6 of its contrast
    r_pre, r_wet = 0.2 + 0.02 * (pre - pre.mean()) / pre.std(), \
        0.2 + 0.02 * (wet - pre.mean()) / pre.std()
    core = r_wet < 0.61 * r_pre
    assert core.mean() > 0.03
    np.testing.assert_allclose(r_wet[core] / r_pre[core], 0.6, atol=0.01)


def test_striping_is_a_gain_per_column():
    flow, ground = _identity()
    img = np.random.default_rng(11).normal(0, 1, (96, 96)).astype(np.float32) + 20
    change = replace(OFF, striping_prob=1.0, striping=(0.03, 0.03),
                     reflectance_mean=(0.1, 0.1), reflectance_std=(0.01, 0.01))
    a, _, _, info = apply_realistic_change(img, img.copy(), np.random.default_rng(12), change,
                                           flow, ground)
    assert info["striping"] == ["pre", "post"]
    # in reflectance R = 0.1 + 0.01 z; a column gain multiplies R, the same down a column
    mu, sd = img.mean(), img.std()
    r_in = 0.1 + 0.01 * (img - mu) / sd
    r_out = 0.1 + 0.01 * (a - mu) / sd
    ratio = r_out / r_in
    assert np.abs(ratio - ratio[:1]).max() < 1e-5  # constant down each column
    assert 0.01 < ratio[0].std() < 0.06  # a few percent between columns


def test_noise_matches_the_snr(texture):
    flow, ground = _identity()
    img = np.zeros((96, 96), np.float32)
    img[0, 0] = 1.0
    change = replace(OFF, snr=(100.0, 100.0), reflectance_mean=(0.1, 0.1),
                     reflectance_std=(0.01, 0.01))
    a, _, _, _ = apply_realistic_change(img, img.copy(), np.random.default_rng(13), change,
                                        flow, ground)
    sd = img.std()
    noise_r = (a - img)[1:, 1:] * 0.01 / sd  # back to reflectance
    assert noise_r.std() == pytest.approx(0.1 / 100, rel=0.05)


def test_compression_removes_fine_detail_keeps_the_low_pass():
    from model.temporal_change import _compress

    rng = np.random.default_rng(14)
    from scipy import ndimage

    smooth = ndimage.gaussian_filter(rng.normal(0, 1, (96, 96)), 6) * 10
    detail = rng.normal(0, 0.01, (96, 96))
    out = _compress(smooth + detail, 0.7, 0.05)
    assert np.abs(out - smooth).std() < 0.5 * detail.std()
    big = _compress(smooth + detail, 0.7, 0.0)
    np.testing.assert_allclose(big, smooth + detail)


def test_realistic_pairs_keep_the_true_flow_and_are_reproducible(texture):
    clean = make_pair(texture, np.random.default_rng(15), (96, 96), "small")
    a = make_pair(texture, np.random.default_rng(15), (96, 96), "small",
                  temporal_change=True, change=RealisticChange())
    b = make_pair(texture, np.random.default_rng(15), (96, 96), "small",
                  temporal_change=True, change=RealisticChange())
    np.testing.assert_array_equal(a.flow, clean.flow)
    np.testing.assert_array_equal(a.fault_mask, clean.fault_mask)
    assert not (a.valid & ~clean.valid).any()  # change only removes valid pixels
    assert np.abs(a.post - clean.post).mean() > 0.1
    for x, y in ((a.pre, b.pre), (a.post, b.post), (a.valid, b.valid)):
        np.testing.assert_array_equal(x, y)
    assert a.params["realistic"] and not clean.params["realistic"]
