"""The projector: its MS-SSIM is metrics.ms_ssim with gradients, the noise regulariser is
StyleGAN2's, a generator's own image is found again, the noise maps are optimised only where G
has noise inputs, and a bad target is refused with a message that says what to do."""
import numpy as np
import pytest
from PIL import Image

import nanostyle as ns
from nanostyle import metrics
from nanostyle.autograd import Tensor, no_grad
from nanostyle.networks import Generator, network_kwargs
from nanostyle.projector import load_target, ms_ssim, noise_regularization, psnr, target_image

from helpers import check_backward


def tiny_generator(res=32, **overrides):
    kwargs = dict(network_kwargs("tiny", res)[0], **overrides)
    return Generator(img_resolution=res, seed=0, **kwargs)


@pytest.mark.parametrize("size", [16, 32, 64])
def test_ms_ssim_is_the_metrics_definition(size):
    rng = np.random.default_rng(size)
    a = np.tanh(rng.standard_normal((3, 1, size, size)))
    b = np.clip(a + 0.3 * rng.standard_normal(a.shape), -1, 1)
    np.testing.assert_allclose(ms_ssim(Tensor(a), Tensor(b)).numpy(), metrics.ms_ssim(a, b), rtol=0, atol=1e-12)
    np.testing.assert_allclose(ms_ssim(Tensor(a), Tensor(a)).numpy(), 1.0, atol=1e-12)


@pytest.mark.parametrize("size", [16, 24])      # one scale (plain SSIM), two scales
def test_ms_ssim_gradients(size):
    rng = np.random.default_rng(1)
    a = np.tanh(rng.standard_normal((2, 1, size, size)))
    b = np.clip(a + 0.2 * rng.standard_normal(a.shape), -1, 1)
    check_backward(lambda x, y: ms_ssim(x, y), [a, b])


def _noise_regularization_reference(noise):
    total, x = 0.0, noise.astype(np.float64)
    while True:
        total += np.mean(x * np.roll(x, 1, axis=1)) ** 2 + np.mean(x * np.roll(x, 1, axis=0)) ** 2
        if x.shape[0] <= 8:
            return total
        x = x.reshape(x.shape[0] // 2, 2, x.shape[1] // 2, 2).mean(axis=(1, 3))


def test_noise_regularization_is_stylegan2_s_and_differentiable():
    rng = np.random.default_rng(2)
    maps = [rng.standard_normal((size, size)) for size in (4, 8, 32)]
    smooth = np.cumsum(np.cumsum(rng.standard_normal((32, 32)), axis=0), axis=1)
    expected = sum(_noise_regularization_reference(m) for m in maps)
    assert noise_regularization([Tensor(m) for m in maps]).numpy() == pytest.approx(expected, rel=1e-12)
    # structured maps cost far more than white ones of the same size
    smooth = (smooth - smooth.mean()) / smooth.std()
    assert _noise_regularization_reference(smooth) > 100 * _noise_regularization_reference(maps[2])
    check_backward(lambda a, b: noise_regularization([a, b]), [maps[1], maps[2]])


# StyleGAN2's projector searches locally from w_avg, and a random-weight generator's W is rugged:
# with 300 steps it finds some seeds' images again and ends in a local minimum for others
# (docs/experiments.md, "Projection: finding a generator's own images"). The seeds here are ones
# it finds; a broken gradient, schedule or loss would lose them.
@pytest.mark.parametrize("use_noise, seed, strength, least_psnr", [(False, 6, 0.0, 30.0), (True, 7, 0.05, 30.0)])
def test_projection_finds_the_generator_s_own_image_again(use_noise, seed, strength, least_psnr):
    G = tiny_generator(use_noise=use_noise)
    for name, p in G.named_parameters():        # noise that matters: the projector re-finds the maps
        if name.endswith("noise_strength"):
            p.data[...] = strength
    before = G.state_dict()
    target = G.sample(seeds=[seed])[0, 0]
    result = ns.project(G, target, steps=300, progress=False)
    assert result.psnr >= least_psnr, f"projection reached {result.psnr:.1f} dB"
    assert psnr(result.frames[0], result.target) < 20                   # and did not start there
    assert result.w.shape == (G.num_ws, G.w_dim) and np.all(result.w == result.w[0])
    assert result.loss[-1] < result.loss[0] and len(result.loss) == 300
    assert result.frames.shape[1:] == (32, 32) and len(result.frames) == 51
    np.testing.assert_allclose(result.residual, np.abs(result.image - result.target) / 2, atol=1e-7)
    own_maps = sorted(n for n in before if n.endswith("noise_const"))
    assert sorted(result.noise) == (own_maps if use_noise else [])
    for name, noise in result.noise.items():   # renormalised, white, and no longer G's own maps
        assert abs(noise.mean()) < 1e-4 and noise.std() == pytest.approx(1, abs=1e-3)
        assert not np.allclose(noise, before[name])
    if use_noise:
        assert noise_regularization([Tensor(n) for n in result.noise.values()]).numpy() < \
            noise_regularization([Tensor(before[n]) for n in result.noise]).numpy()
    for name, value in G.state_dict().items():                          # G itself is left as it was
        np.testing.assert_array_equal(value, before[name])


def test_w_plus_and_the_saved_w_redraw_the_image():
    G = tiny_generator(use_noise=False)
    target = G.sample(seeds=[3])[0, 0]
    result = ns.project(G, target, steps=20, wplus=True, progress=False, frame_every=5)
    assert result.w.shape == (G.num_ws, G.w_dim) and not np.all(result.w == result.w[0])
    assert len(result.frames) == 5
    with no_grad():
        redrawn = G.synthesis(Tensor(result.w[None]), noise_mode="const").numpy()[0, 0]
    np.testing.assert_allclose(np.clip(redrawn, -1, 1), result.image, atol=1e-6)


@pytest.mark.parametrize("image, message", [
    (np.zeros((64, 64), np.uint8), "64x64, the generator draws 32x32"),
    (np.zeros((32, 32, 3), np.uint8), "colour channels"),
    (np.zeros((2, 32, 32), np.uint8), "one 2-D slice"),
    (np.full((32, 32), 3.0), r"\[-1, 1\]"),
    (np.zeros((32, 32), np.int64), "uint8"),
])
def test_bad_targets_are_refused_clearly(image, message):
    with pytest.raises(ValueError, match=message):
        target_image(image, 32)


def test_targets_read_from_files(tmp_path):
    gray = (np.arange(32 * 32).reshape(32, 32) % 251).astype(np.uint8)
    Image.fromarray(gray).save(tmp_path / "gray.png")
    Image.fromarray(gray).convert("RGB").save(tmp_path / "rgb.png")
    Image.fromarray(np.tile(gray, (2, 2))).save(tmp_path / "big.png")
    (tmp_path / "broken.png").write_bytes(b"not a png at all")
    image, notes = load_target(str(tmp_path / "gray.png"), 32)
    np.testing.assert_array_equal(image, gray)
    assert notes == []
    image, notes = load_target(str(tmp_path / "rgb.png"), 32)
    np.testing.assert_array_equal(image, gray)
    assert len(notes) == 1 and "mode-RGB" in notes[0] and "grayscale" in notes[0]
    with pytest.raises(ValueError, match="64x64, the generator draws 32x32.*--resize"):
        load_target(str(tmp_path / "big.png"), 32)
    image, notes = load_target(str(tmp_path / "big.png"), 32, resize=True)
    assert image.shape == (32, 32) and "resized" in notes[0]
    with pytest.raises(ValueError, match="cannot be read as an image"):
        load_target(str(tmp_path / "broken.png"), 32)
    with pytest.raises(ValueError, match="does not exist"):
        load_target(str(tmp_path / "missing.png"), 32)
