"""Weight-free metrics (nanostyle.metrics) on cases whose answer is known.

The data are built here, with no files: "brain-like" 64x64 slices drawn procedurally (a bright
skull rim around a soft elliptical head of random size, position, tilt and brightness, folded
cortex, two dark ventricles, a few blobs and fine texture, background -1). Two independent draws
from that distribution must score as near perfect; one image repeated, uniform noise, blurred
slices and copies of training images must each fail in the way its metric is built to show.
"""
import json

import numpy as np
import pytest

from nanostyle import metrics

RES = 64
NUM = 200   # per set: enough for stable k-NN and SWD estimates, small enough to keep the file fast


# ---- test data -----------------------------------------------------------------------------------


def separable_filter(images, taps):
    """Correlate the last two axes with 1-D `taps` (reflect padding: numpy 'reflect' is scipy's
    'mirror', the Progressive GAN code's choice), written here so the tests do not lean on the
    module under test."""
    radius = len(taps) // 2
    out = np.asarray(images, dtype=np.float64)
    for axis in (-1, -2):
        pad = [(0, 0)] * out.ndim
        pad[axis] = (radius, radius)
        padded = np.pad(out, pad, mode="reflect")
        out = sum(t * np.take(padded, np.arange(i, i + out.shape[axis]), axis=axis) for i, t in enumerate(taps))
    return out


def gaussian_blur(images, sigma):
    x = np.arange(-int(4 * sigma), int(4 * sigma) + 1)
    taps = np.exp(-x ** 2 / (2 * sigma ** 2))
    return separable_filter(images, taps / taps.sum())


def brain_like(num, seed, res=RES):
    """[num, 1, res, res] procedural slices in [-1, 1]; independent draws for different seeds."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[-1:1:res * 1j, -1:1:res * 1j]

    def uniform(low, high):
        return rng.uniform(low, high, (num, 1, 1))

    cx, cy, tilt = uniform(-0.12, 0.12), uniform(-0.12, 0.12), uniform(-0.35, 0.35)
    xr = (x - cx) * np.cos(tilt) + (y - cy) * np.sin(tilt)
    yr = -(x - cx) * np.sin(tilt) + (y - cy) * np.cos(tilt)
    r = np.sqrt((xr / uniform(0.55, 0.8)) ** 2 + (yr / uniform(0.65, 0.9)) ** 2)   # 1 on the outline
    head = 1 / (1 + np.exp(np.clip((r - 1) / 0.02, -50, 50)))
    skull = np.exp(-((r - 0.96) / 0.03) ** 2)
    cortex = 1 / (1 + np.exp(np.clip((r - 0.9) / 0.02, -50, 50))) * (r > 0.55)
    folds = np.sin(uniform(6, 12) * np.arctan2(yr, xr) + uniform(0, 2 * np.pi) + uniform(8, 16) * r)
    image = uniform(0.3, 0.6) * head + 0.25 * skull + uniform(0.08, 0.2) * folds * cortex
    spread, height, size = uniform(0.08, 0.2), uniform(-0.05, 0.15), uniform(0.08, 0.2)
    for side in (-1, 1):
        distance = ((xr - side * spread) / (0.5 * size)) ** 2 + ((yr - height) / size) ** 2
        image = image - uniform(0.2, 0.4) * np.exp(-distance ** 2)
    for _ in range(4):
        bx, by, width = uniform(-0.5, 0.5), uniform(-0.5, 0.5), uniform(0.05, 0.2)
        image = image + uniform(-0.15, 0.15) * np.exp(-((xr - bx) ** 2 + (yr - by) ** 2) / (2 * width ** 2)) * head
    texture = gaussian_blur(rng.standard_normal((num, res, res)), 0.8)
    texture /= texture.std(axis=(1, 2), keepdims=True)
    image = image + uniform(0.02, 0.06) * texture * head
    return np.clip(2 * image - 1, -1, 1)[:, None]


@pytest.fixture(scope="module")
def reals():
    return brain_like(NUM, seed=1)


@pytest.fixture(scope="module")
def other_reals():
    """An independent draw from the same distribution: what a perfect generator would give."""
    return brain_like(NUM, seed=2)


@pytest.fixture(scope="module")
def scores(reals, other_reals):
    """evaluate() of the reals against each kind of fake, computed once for the module."""
    fakes = {
        "same_distribution": other_reals,
        "one_image_repeated": np.repeat(other_reals[:1], NUM, axis=0),
        "uniform_noise": np.random.default_rng(3).uniform(-1, 1, other_reals.shape),
        "blurred": gaussian_blur(other_reals, 2.0),
    }
    return {name: metrics.evaluate(reals, fake, seed=0) for name, fake in fakes.items()}


# ---- the known cases ----------------------------------------------------------------------------


def test_same_distribution_scores_near_perfect(scores):
    r = scores["same_distribution"]
    assert r["precision"] > 0.8 and r["recall"] > 0.8
    assert r["precision_tolerant"] > 0.8 and r["recall_tolerant"] > 0.8
    assert 0.8 < r["diversity_ratio"] < 1.25
    # SWD of two draws of one distribution is sampling noise only: a few units, far below any failure
    assert r["swd_avg"] < 30
    for failure in ("one_image_repeated", "uniform_noise", "blurred"):
        assert scores[failure]["swd_avg"] > 3 * r["swd_avg"], failure


def test_image_gradients_are_the_neighbour_differences():
    x = np.random.default_rng(8).standard_normal((3, 2, 4, 5))
    f = metrics.image_gradients(x)
    assert f.shape == (3, 2 * (4 * 4 + 3 * 5))
    assert f[1, 0] == x[1, 0, 0, 1] - x[1, 0, 0, 0] and f[1, 2 * 4 * 4] == x[1, 0, 1, 0] - x[1, 0, 0, 0]
    assert np.allclose(metrics.image_gradients(x + 0.3), f)


def test_one_repeated_image_has_no_diversity_and_no_recall(scores):
    r = scores["one_image_repeated"]
    assert r["diversity_ratio"] < 0.1
    assert r["ms_ssim_fake"] == pytest.approx(1.0)
    assert r["recall"] < 0.1 and r["recall_tolerant"] < 0.1


def test_uniform_noise_has_no_precision(scores):
    r = scores["uniform_noise"]
    assert r["precision"] < 0.1 and r["recall"] < 0.1
    assert r["precision_tolerant"] < 0.1 and r["recall_tolerant"] < 0.1


def test_blurred_reals_score_worse_than_sharp(scores):
    sharp, blurred = scores["same_distribution"], scores["blurred"]
    assert blurred["swd_avg"] > sharp["swd_avg"]
    assert blurred[f"swd_{RES}"] > 3 * sharp[f"swd_{RES}"]   # blur shows first in the finest band
    assert blurred["precision"] < sharp["precision"] - 0.3
    assert blurred["recall"] < sharp["recall"]
    assert blurred["precision_tolerant"] < sharp["precision_tolerant"] - 0.3
    assert blurred["recall_tolerant"] < sharp["recall_tolerant"] - 0.3


def zoomed(image, factors):
    """[len(factors), 1, H, W]: `image` [1, H, W] zoomed about its centre (bilinear, background -1)."""
    _, H, W = image.shape
    rows, cols = np.mgrid[:H, :W].astype(np.float64)
    out = []
    for f in factors:
        y, x = (rows - (H - 1) / 2) / f + (H - 1) / 2, (cols - (W - 1) / 2) / f + (W - 1) / 2
        y0, x0 = np.floor(y).astype(int), np.floor(x).astype(int)
        value = np.zeros((H, W))
        for dy, dx in ((0, 0), (0, 1), (1, 0), (1, 1)):
            yy, xx = y0 + dy, x0 + dx
            weight = (1 - abs(y - yy)) * (1 - abs(x - xx))
            inside = (yy >= 0) & (yy < H) & (xx >= 0) & (xx < W)
            value += weight * np.where(inside, image[0][np.clip(yy, 0, H - 1), np.clip(xx, 0, W - 1)], -1.0)
        out.append(value)
    return np.stack(out)[:, None]


def test_tolerant_precision_accepts_small_moves_of_a_one_template_set():
    # the default data's case: one brain, a thin 1-D family of slices (here: one zoom sweep)
    template = zoomed(brain_like(1, seed=5)[0], np.linspace(0.45, 1.0, 120))
    rng = np.random.default_rng(6)
    moved = np.stack([np.roll(image, tuple(rng.choice([-1, 1], 2)), axis=(-2, -1)) for image in template])
    strict = metrics.precision_recall(template, moved)
    tolerant = metrics.precision_recall_tolerant(template, moved)
    # a one-pixel move leaves the exact k-NN manifold (its balls reach about one slice step) ...
    assert strict["precision"] < 0.5
    # ... and stays well inside the pose-tolerant one, which still rejects noise and blur
    assert tolerant["precision_tolerant"] > 0.8 and tolerant["recall_tolerant"] > 0.8
    noisy = np.clip(template + 0.3 * rng.standard_normal(template.shape), -1, 1)
    assert metrics.precision_recall_tolerant(template, noisy)["precision_tolerant"] < 0.3
    assert metrics.precision_recall_tolerant(template, gaussian_blur(template, 2.0))["precision_tolerant"] < 0.3


def test_nuisance_augment_is_the_identity_at_zero_range_and_seeded():
    images = brain_like(6, seed=7)
    same = metrics.nuisance_augment(images, copies=2, shift=0, rotate=0, scale=0, brightness=0)
    np.testing.assert_allclose(same, np.concatenate([images, images]), atol=1e-12)
    a, b = metrics.nuisance_augment(images, seed=1), metrics.nuisance_augment(images, seed=1)
    assert a.shape == (24, 1, RES, RES) and np.array_equal(a, b)
    assert not np.array_equal(a, metrics.nuisance_augment(images, seed=2))
    assert a.min() >= -1 and a.max() <= 1


def test_memorisation_flags_copies_of_training_images(reals, other_reals):
    train, heldout = reals[:150], other_reals[150:]
    # near-copies: training images with a faint perturbation, as a memorising generator would give
    copies = train[:50] + 1e-3 * np.random.default_rng(4).standard_normal(train[:50].shape)
    copied = metrics.memorisation(copies, train, heldout)
    fresh = metrics.memorisation(other_reals[:50], train, heldout)
    assert copied["memorisation_ratio"] < 0.1 and copied["memorisation_ratio_pixel"] < 0.1
    assert copied["near_copy_share"] == 1.0
    assert 0.7 < fresh["memorisation_ratio"] < 1.4
    assert 0.7 < fresh["memorisation_ratio_pixel"] < 1.4
    assert fresh["near_copy_share"] < 0.25


# ---- the pieces ----------------------------------------------------------------------------------


def test_ms_ssim_is_one_on_identical_pairs_symmetric_and_bounded(reals, other_reals):
    a, b = reals[:20], other_reals[:20]
    np.testing.assert_allclose(metrics.ms_ssim(a, a), 1.0, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(metrics.ms_ssim(a, b), metrics.ms_ssim(b, a))
    values = metrics.ms_ssim(a, b)
    assert values.shape == (20,) and np.all((values >= -1) & (values <= 1))
    # more noise, less similarity
    rng = np.random.default_rng(5)
    slight, strong = (np.clip(a + s * rng.standard_normal(a.shape), -1, 1) for s in (0.05, 0.5))
    assert np.all(metrics.ms_ssim(a, slight) > metrics.ms_ssim(a, strong))


def test_ms_ssim_of_flat_images_is_the_luminance_term():
    # 16x16 gives one scale (plain SSIM); flat images have no contrast, so SSIM is the luminance
    # term (2 x y + C1) / (x^2 + y^2 + C1), C1 = (0.01 * 2)^2
    x, y = 0.3, 0.1
    a, b = np.full((1, 1, 16, 16), x), np.full((1, 1, 16, 16), y)
    c1 = (0.01 * 2) ** 2
    np.testing.assert_allclose(metrics.ms_ssim(a, b), (2 * x * y + c1) / (x * x + y * y + c1), rtol=1e-12)


def test_laplacian_pyramid_levels_and_exact_reconstruction(reals):
    levels = metrics.laplacian_pyramid(reals[:4])
    assert [level.shape[-1] for level in levels] == [64, 32, 16]
    assert len(metrics.laplacian_pyramid(np.zeros((1, 1, 256, 256)))) == 5
    image = levels[-1]
    for band in levels[-2::-1]:   # bands are image minus upsampled coarser level: adding back is exact
        up = np.zeros(image.shape[:-2] + (2 * image.shape[-2], 2 * image.shape[-1]))
        up[..., ::2, ::2] = image
        taps = np.array([1, 4, 6, 4, 1]) / 8.0   # cv2.pyrUp: the binomial filter x 4 in 2-D
        image = band + separable_filter(up, taps)
    np.testing.assert_allclose(image, reals[:4], atol=1e-12)


def test_laplacian_pyramid_matches_the_progressive_gan_definition(reals):
    # An independent reference written from the published facts of ProGAN's SWD pyramid (5x5
    # binomial kernel / 256, mirror edges, x4 on the way up), through scipy.ndimage (test-only).
    ndimage = pytest.importorskip("scipy.ndimage")
    kernel = np.outer([1, 4, 6, 4, 1], [1, 4, 6, 4, 1])[None, None] / 256.0

    def pyr_down(x):
        return ndimage.convolve(x, kernel, mode="mirror")[:, :, ::2, ::2]

    def pyr_up(x):
        up = np.zeros(x.shape[:2] + (2 * x.shape[2], 2 * x.shape[3]))
        up[:, :, ::2, ::2] = x
        return ndimage.convolve(up, kernel * 4.0, mode="mirror")

    expected = [reals[:4]]
    for _ in range(2):
        expected.append(pyr_down(expected[-1]))
        expected[-2] = expected[-2] - pyr_up(expected[-1])
    for ours, theirs in zip(metrics.laplacian_pyramid(reals[:4]), expected):
        np.testing.assert_allclose(ours, theirs, atol=1e-12)


def test_swd_uses_every_part_of_the_larger_set(reals, other_reals):
    """A set four times the other's size is compared as four parts, not one random draw: making
    any one image of the larger set into noise moves the distance, whichever side is larger."""
    small, large = reals[:10, :, :16, :16], other_reals[:40, :, :16, :16]
    kwargs = dict(patches_per_image=16, num_projections=32, seed=3)
    noise = np.random.default_rng(5).uniform(-1, 1, size=small.shape[1:])
    for real_is_larger in (False, True):
        def swd(images):
            return metrics.sliced_wasserstein(*((images, small) if real_is_larger else (small, images)), **kwargs)
        base = swd(large)
        for index in range(0, 40, 3):
            changed = large.copy()
            changed[index] = noise
            assert swd(changed)["swd_avg"] != base["swd_avg"], (real_is_larger, index)


def test_swd_reports_every_level_and_scales_to_the_resolution(reals, other_reals):
    r = metrics.sliced_wasserstein(reals[:40], other_reals[:40], patches_per_image=32)
    assert list(r) == ["swd_64", "swd_32", "swd_16", "swd_avg"]
    assert r["swd_avg"] == pytest.approx(np.mean([r["swd_64"], r["swd_32"], r["swd_16"]]))
    small = metrics.sliced_wasserstein(reals[:10, :, :16, :16], other_reals[:30, :, :16, :16], patches_per_image=16)
    assert list(small) == ["swd_16", "swd_avg"]


def test_precision_recall_on_points_with_known_answer():
    # features = the first pixel, so the k-NN balls are intervals on a line we can check by hand.
    # k = 1. Reals at 0..4 (radius 1 each). Fakes at 0.5 and 2 fall inside, 5.5 and 10 outside:
    # precision 2/4. Fake radii: 1.5, 1.5, 3.5, 4.5; every real lies within one: recall 1.
    def points(values):
        images = np.zeros((len(values), 1, 16, 16))
        images[:, 0, 0, 0] = values
        return images

    first_pixel = lambda images: images[:, 0, 0, :1]
    r = metrics.precision_recall(points([0, 1, 2, 3, 4]), points([0.5, 10, 2, 5.5]), k=1, features=first_pixel)
    assert r == {"precision": 0.5, "recall": 1.0}


def test_precision_recall_compare_sets_at_equal_size():
    # Reals on a line, fakes on a parallel line 0.03 away. With as many fakes as reals, each fake
    # ball (to its 3rd neighbour, ~0.06) reaches across to the reals; 20 times as many fakes have
    # balls 20 times smaller that would reach none, unless the sets are compared at equal size.
    def on_line(t, offset):
        images = np.zeros((len(t), 1, 16, 16))
        images[:, 0, 0, 0], images[:, 0, 0, 1] = t, offset
        return images

    first_pixels = lambda images: images[:, 0, 0, :2]
    rng = np.random.default_rng(11)
    real = on_line(np.linspace(0, 1, 50), 0.0)
    few = metrics.precision_recall(real, on_line(rng.random(50), 0.03), features=first_pixels)
    many = metrics.precision_recall(real, on_line(rng.random(1000), 0.03), features=first_pixels)
    assert few["recall"] > 0.7
    assert abs(many["recall"] - few["recall"]) < 0.15
    # and the other way round: 20 times as many reals as fakes leave precision where it was
    fakes = on_line(rng.random(50), 0.03)
    equal = metrics.precision_recall(on_line(rng.random(50), 0.0), fakes, features=first_pixels)
    more_reals = metrics.precision_recall(on_line(rng.random(1000), 0.0), fakes, features=first_pixels)
    assert equal["precision"] > 0.7
    assert abs(more_reals["precision"] - equal["precision"]) < 0.15


def test_tolerant_precision_recall_do_not_drift_with_the_sample_count(reals):
    # blurred slices: off the real manifold, as samples are, so smaller fake balls reach fewer
    # reals. Recall of 200 samples against 40 reals should be what 40 samples at a time give
    # (before equal-size parts: 0.33 against 0.71).
    blurred = gaussian_blur(brain_like(200, seed=7), 1.0)
    fives = [metrics.precision_recall_tolerant(reals[:40], blurred[i:i + 40], copies=2)["recall_tolerant"]
             for i in range(0, 200, 40)]
    many = metrics.precision_recall_tolerant(reals[:40], blurred, copies=2)["recall_tolerant"]
    assert abs(many - np.mean(fives)) < 0.2


def test_batched_distances_match_brute_force():
    rng = np.random.default_rng(6)
    a, b = rng.standard_normal((37, 5)), rng.standard_normal((23, 5))
    brute = ((a[:, None, :] - b[None, :, :]) ** 2).sum(axis=-1)
    batched = np.empty_like(brute)
    for rows, d in metrics._squared_distances(a, b, batch=8):
        batched[rows] = d
    np.testing.assert_allclose(batched, brute, atol=1e-12)


def test_embed_is_fit_on_reals_and_bounded_in_size(reals, other_reals):
    embedding = metrics.Embedding(reals)
    features = embedding(other_reals)
    assert features.shape == (NUM, 64)
    np.testing.assert_allclose(metrics.embed(other_reals, reference=reals), features)
    assert metrics.embed(reals[:10]).shape == (10, 9)   # PCA keeps at most N - 1 components


# ---- determinism, output format, errors ----------------------------------------------------------


def test_same_seed_same_numbers_other_seed_other_draws(reals, other_reals):
    a, b = reals[:60], other_reals[:60]
    first = metrics.evaluate(a, b, train=a[:40], heldout=a[40:], seed=7)
    assert metrics.evaluate(a, b, train=a[:40], heldout=a[40:], seed=7) == first
    assert metrics.sliced_wasserstein(a, b, seed=8) != metrics.sliced_wasserstein(a, b, seed=7)
    assert metrics.diversity(b, a, num_pairs=50, seed=1) == metrics.diversity(b, a, num_pairs=50, seed=1)


def test_evaluate_is_flat_json_and_prints_as_a_table(reals, other_reals, scores):
    r = scores["same_distribution"]
    assert all(type(v) is float and np.isfinite(v) for v in r.values())
    json.dumps(r, allow_nan=False)
    table = metrics.format_table(dict(r, num_fake=NUM))
    assert all(key in table for key in r) and "num_fake" in table
    # too few images for precision/recall: evaluate runs what applies and leaves the rest out
    few = metrics.evaluate(reals[:3], other_reals[:3])
    assert "swd_avg" in few and "diversity_ratio" in few and "precision" not in few


def test_bad_input_raises_value_error_naming_function_and_problem(reals, other_reals):
    a, b = reals[:8], other_reals[:8]
    with pytest.raises(ValueError, match=r"sliced_wasserstein: real must be a 4-D array \[N, C, H, W\]"):
        metrics.sliced_wasserstein(a[0], b)
    with pytest.raises(ValueError, match=r"precision_recall: image sets differ in shape"):
        metrics.precision_recall(a, b[:, :, :32, :32])
    nan = b.copy()
    nan[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match=r"diversity: fake contains NaN or Inf \(1 values\)"):
        metrics.diversity(nan, a)
    with pytest.raises(ValueError, match=r"evaluate: fake contains NaN"):
        metrics.evaluate(a, nan)
    with pytest.raises(ValueError, match=r"memorisation: heldout must be a 4-D array"):
        metrics.memorisation(a, b, b[:, 0])
    with pytest.raises(ValueError, match=r"ms_ssim: a and b must hold the same number"):
        metrics.ms_ssim(a, b[:3])
    with pytest.raises(ValueError, match=r"ms_ssim: a images must be at least 16x16"):
        metrics.ms_ssim(a[:, :, :8, :8], b[:, :, :8, :8])
    with pytest.raises(ValueError, match=r"precision_recall: need more than k=3 images"):
        metrics.precision_recall(a[:3], b)
    with pytest.raises(ValueError, match=r"evaluate: real holds integers up to 255.*to_float"):
        metrics.evaluate(np.full((4, 1, 16, 16), 255, dtype=np.uint8), b[:, :, :16, :16])
    with pytest.raises(ValueError, match=r"sliced_wasserstein: fake is empty"):
        metrics.sliced_wasserstein(a, b[:0])


def test_mean_pair_distance_is_the_mean_rms_distance_over_distinct_pairs():
    from nanostyle.metrics import mean_pair_distance
    x = np.random.default_rng(3).uniform(-1, 1, (7, 1, 5, 6))
    brute = [np.sqrt(((x[i] - x[j]) ** 2).mean()) for i in range(7) for j in range(i + 1, 7)]
    assert mean_pair_distance(x) == pytest.approx(np.mean(brute), rel=1e-9)
    assert mean_pair_distance(np.repeat(x[:1], 5, axis=0)) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="at least 2"):
        mean_pair_distance(x[:1])
