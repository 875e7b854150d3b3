"""Augmentation and ADA: the identity at p = 0, each transform alone, the black pivot, the
controller moving p both ways."""
import numpy as np
import pytest

import nanostyle as ns
from nanostyle.augment import AdaController, AugmentPipe
from nanostyle.gradcheck import check_backward


def test_augment_p0_is_identity_and_p1_changes_images_differentiably():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 1, 8, 8))
    pipe = AugmentPipe(noise=1.0)
    assert np.array_equal(pipe(ns.Tensor(x), np.random.default_rng(1)).data, x)
    pipe.p = 1.0
    y = pipe(ns.Tensor(x), np.random.default_rng(1)).data
    assert y.shape == x.shape and not np.allclose(y, x)
    check_backward(lambda t: pipe(t, np.random.default_rng(1)) ** 2, [x], num_directions=1)


@pytest.mark.parametrize("name", ["xflip", "translate", "brightness", "contrast", "cutout"])
def test_each_transform_alone(name):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((64, 1, 8, 8))
    strengths = dict(xflip=0, translate=0, brightness=0, contrast=0, cutout=0, noise=0)
    strengths[name] = 1
    pipe = AugmentPipe(**strengths)
    pipe.p = 1.0
    y = pipe(ns.Tensor(x), np.random.default_rng(3)).data
    if name == "xflip":
        flipped = np.all(y == x[:, :, :, ::-1], axis=(1, 2, 3))
        same = np.all(y == x, axis=(1, 2, 3))
        assert np.all(flipped | same) and 0.3 < flipped.mean() < 0.7
    elif name == "translate":
        assert np.allclose(np.sort(y.reshape(64, -1)).sum(), np.sort(y.reshape(64, -1)).sum())
        assert not np.allclose(y, x)
    elif name == "brightness":
        shift = (y - x).mean(axis=(1, 2, 3))
        assert np.allclose(y - x, shift[:, None, None, None]) and 0.1 < shift.std() < 0.3
    elif name == "contrast":
        np.testing.assert_allclose(y.mean(axis=(1, 2, 3)), x.mean(axis=(1, 2, 3)), atol=1e-12)
    elif name == "cutout":
        assert ((y == -1) & (x != -1)).mean() > 0.1


@pytest.mark.parametrize("name", ["brightness", "contrast"])
def test_colour_transforms_about_black_keep_the_background_black(name):
    rng = np.random.default_rng(6)
    x = -np.ones((64, 1, 8, 8))
    x[:, :, 2:6, 2:6] = rng.uniform(-0.5, 1, (64, 1, 4, 4))   # a brain on a black background
    strengths = dict(xflip=0, translate=0, brightness=0, contrast=0, cutout=0, noise=0)
    strengths[name] = 1
    pipe = AugmentPipe(**strengths, pivot="black")
    pipe.p = 1.0
    y = pipe(ns.Tensor(x), np.random.default_rng(3)).data
    background = x == -1
    assert np.array_equal(y[background], x[background])
    gain = (y + 1)[:, :, 2:6, 2:6] / (x + 1)[:, :, 2:6, 2:6]    # a gain about -1, one per image
    assert np.allclose(gain, gain[:, :, :1, :1]) and gain.std() > 0.05
    # the reference pivot moves the background too
    reference = AugmentPipe(**strengths)
    reference.p = 1.0
    assert not np.allclose(reference(ns.Tensor(x), np.random.default_rng(3)).data[background], -1)
    check_backward(lambda t: pipe(t, np.random.default_rng(1)) ** 2, [x[:4]], num_directions=1)


def test_augment_pipe_refuses_an_unknown_pivot():
    with pytest.raises(ValueError, match="pivot must be 'mean' or 'black'"):
        AugmentPipe(pivot="median")


def test_ada_controller_moves_p_both_ways():
    pipe = AugmentPipe()
    ada = AdaController(pipe, batch_size=64, target=0.6, interval=4, kimg=1)
    for _ in range(8):
        ada.accumulate(np.ones(64))
        ada.step()
    up = pipe.p
    assert up > 0 and ada.rt == 1.0
    for _ in range(4):
        ada.accumulate(-np.ones(64))
        ada.step()
    assert pipe.p < up
