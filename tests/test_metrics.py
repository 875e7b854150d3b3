"""Weight-free metrics on known cases: reals against reals are near perfect, one repeated image
has no diversity and no recall, noise has no precision, blurred reals score worse than sharp."""
import numpy as np
import pytest

from nanostyle import metrics
from nanostyle.data import load_default_dataset, to_float


@pytest.fixture(scope="module")
def reals():
    images = to_float(load_default_dataset(32).images).astype(np.float64)
    order = np.random.default_rng(0).permutation(len(images))
    return images[order[:60]], images[order[60:120]]


def test_real_against_real_is_near_perfect(reals):
    a, b = reals
    r = metrics.evaluate(a, b)
    assert r["precision"] > 0.8 and r["recall"] > 0.8
    assert 0.8 < r["diversity_ratio"] < 1.25


def test_one_repeated_image_has_no_diversity_and_no_recall(reals):
    a, b = reals
    r = metrics.evaluate(a, np.repeat(b[:1], len(b), axis=0))
    assert r["diversity_ratio"] < 0.1 and r["recall"] < 0.1


def test_noise_has_no_precision_and_blur_scores_worse(reals):
    a, b = reals
    noise = np.random.default_rng(1).uniform(-1, 1, b.shape)
    sharp = metrics.evaluate(a, b)
    assert metrics.evaluate(a, noise)["precision"] < 0.1
    blurred = metrics.evaluate(a, metrics._blur(metrics._blur(b)))
    assert blurred["swd_avg"] > sharp["swd_avg"]
    assert blurred["precision"] + blurred["recall"] <= sharp["precision"] + sharp["recall"]


def test_memorisation_flags_copies(reals):
    a, b = reals
    train, heldout = a[:40], a[40:]
    copies = metrics.memorisation(train[:20], train, heldout)
    fresh = metrics.memorisation(b[:20], train, heldout)
    assert copies["memorisation_ratio"] < 0.1 < fresh["memorisation_ratio"]


def test_ms_ssim_properties(reals):
    a, b = reals
    np.testing.assert_allclose(metrics.ms_ssim(a[:5], a[:5]), 1.0, rtol=1e-9)
    np.testing.assert_allclose(metrics.ms_ssim(a[:5], b[:5]), metrics.ms_ssim(b[:5], a[:5]), rtol=1e-12)
    assert np.all(metrics.ms_ssim(a[:5], b[:5]) <= 1)


def test_determinism_and_errors(reals):
    a, b = reals
    assert metrics.sliced_wasserstein(a, b, seed=3) == metrics.sliced_wasserstein(a, b, seed=3)
    with pytest.raises(ValueError, match="sliced_wasserstein.*\\[N, C, H, W\\]"):
        metrics.sliced_wasserstein(a[0], b)
    with pytest.raises(ValueError, match="differ in shape"):
        metrics.precision_recall(a, b[:, :, :16, :16])
    bad = b.copy()
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        metrics.diversity(bad, a)
