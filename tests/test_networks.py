"""nn.Module bookkeeping and the StyleGAN2 networks: shapes at every resolution, the bench64
parameter counts of the reference, gradients through G and D, R1 through a real D."""
import numpy as np
import pytest

import nanostyle as ns
from nanostyle.gradcheck import check_backward
from nanostyle.networks import Discriminator, Generator, network_kwargs
from nanostyle.nn import copy_module


def tiny(res, dtype=np.float32, seed=0):
    G_kwargs, D_kwargs = network_kwargs("tiny", res)
    return (Generator(img_resolution=res, seed=seed, dtype=dtype, **G_kwargs),
            Discriminator(img_resolution=res, seed=seed + 1, dtype=dtype, **D_kwargs))


def test_bench64_parameter_counts_equal_the_reference():
    G_kwargs, D_kwargs = network_kwargs("bench64", 64)
    assert Generator(img_resolution=64, **G_kwargs).num_parameters() == 4_364_110
    assert Discriminator(img_resolution=64, **D_kwargs).num_parameters() == 4_727_489


@pytest.mark.parametrize("res", [16, 32, 64, 128, 256])
def test_shapes_at_every_resolution(res):
    G, D = tiny(res)
    z = ns.Tensor(np.random.default_rng(res).standard_normal((2, G.z_dim)).astype(np.float32))
    with ns.no_grad():
        ws = G.mapping(z)
        assert ws.shape == (2, G.num_ws, G.w_dim) and G.num_ws == 2 * int(np.log2(res)) - 2
        for mode in ("random", "const", "none"):
            img = G.synthesis(ws, noise_mode=mode, rng=np.random.default_rng(0))
            assert img.shape == (2, 1, res, res) and img.dtype == np.float32
        assert D(img).shape == (2, 1)


def test_generator_without_noise_inputs():
    G_kwargs, _ = network_kwargs("tiny", 16)
    noisy = Generator(img_resolution=16, seed=3, **G_kwargs)
    quiet = Generator(img_resolution=16, seed=3, use_noise=False, **G_kwargs)
    noise_names = [n for n, _ in noisy.named_parameters() + noisy.named_buffers() if "noise" in n]
    assert len(noise_names) == 2 * (noisy.synthesis.num_ws - 1)   # strength + const per conv layer
    assert not [n for n, _ in quiet.named_parameters() + quiet.named_buffers() if "noise" in n]
    assert quiet.num_parameters() == noisy.num_parameters() - len(noise_names) // 2
    z = ns.Tensor(np.random.default_rng(1).standard_normal((3, quiet.z_dim)).astype(np.float32))
    with ns.no_grad():
        images = [quiet(z, noise_mode=mode, rng=np.random.default_rng(k)).data
                  for k, mode in enumerate(("random", "random", "const", "none"))]
        for other in images[1:]:
            assert np.array_equal(images[0], other)      # nothing random left in the synthesis
        with pytest.raises(ValueError, match="noise_mode"):
            quiet(z, noise_mode="loud")
        # with noise inputs and a non-zero strength, 'random' differs between draws
        for name, p in noisy.named_parameters():
            if name.endswith("noise_strength"):
                p.data = np.asarray(0.5, dtype=np.float32)
        a, b = (noisy(z, noise_mode="random", rng=np.random.default_rng(k)).data for k in (0, 1))
        assert np.abs(a - b).max() > 1e-3
    assert network_kwargs("cpu", 64)[0]["use_noise"] is False


def test_truncation_pulls_towards_w_avg_and_update_emas_tracks_it():
    G, _ = tiny(16)
    z = ns.Tensor(np.random.default_rng(0).standard_normal((4, G.z_dim)).astype(np.float32))
    with ns.no_grad():
        G.mapping(z, update_emas=True)
        assert np.abs(G.mapping.w_avg.data).sum() > 0
        full = G.mapping(z).data
        half = G.mapping(z, truncation_psi=0.5).data
        cut = G.mapping(z, truncation_psi=0.0, truncation_cutoff=2).data
    np.testing.assert_allclose(half, G.mapping.w_avg.data + 0.5 * (full - G.mapping.w_avg.data), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(cut[:, :2], np.broadcast_to(G.mapping.w_avg.data, cut[:, :2].shape), atol=1e-6)
    np.testing.assert_allclose(cut[:, 2:], full[:, 2:], atol=1e-6)


def test_state_dict_round_trip_and_errors():
    G, _ = tiny(16, seed=1)
    other, _ = tiny(16, seed=2)
    other.load_state_dict(G.state_dict())
    for (name, a), (_, b) in zip(G.named_parameters() + G.named_buffers(), other.named_parameters() + other.named_buffers()):
        assert np.array_equal(a.data, b.data), name
    state = G.state_dict()
    state.pop("synthesis.blocks.0.conv1.weight")
    state["bogus"] = np.zeros(1)
    with pytest.raises(ValueError, match="missing 1.*unexpected 1"):
        other.load_state_dict(state)
    bigger, _ = tiny(32)
    with pytest.raises(ValueError, match="shape mismatch"):
        bigger.load_state_dict(G.state_dict(), strict=False)
    clone = copy_module(G)
    clone.parameters()[0].data += 1
    assert not np.array_equal(clone.parameters()[0].data, G.parameters()[0].data)


def test_gradients_through_generator_and_discriminator_float64():
    G, D = tiny(8, dtype=np.float64, seed=3)
    rng = np.random.default_rng(4)
    z = rng.standard_normal((2, G.z_dim))
    params = [G.synthesis.blocks[1].conv0.weight, G.mapping.layers[0].weight, D.blocks[0].conv1.weight]
    check_backward(lambda *ts: _with_params(G, D, params, ts, z), [p.data.copy() for p in params],
                   num_directions=1)


def _with_params(G, D, params, tensors, z):
    """Run G -> D with `tensors` substituted for `params` (so gradients reach the tensors)."""
    saved = {}
    for module in (G, D):
        for name, p in module.named_parameters():
            saved[id(p)] = p
    replacements = {id(p): t for p, t in zip(params, tensors)}
    _substitute(G, replacements)
    _substitute(D, replacements)
    try:
        return D(G(ns.Tensor(z), noise_mode="const"))
    finally:
        _restore(G, saved)
        _restore(D, saved)


def _substitute(module, replacements):
    for key, value in list(module.__dict__.items()):
        if id(value) in replacements:
            module.__dict__.setdefault("_saved", {})[key] = value
            object.__setattr__(module, key, replacements[id(value)])
    for _, child in module.named_children():
        _substitute(child, replacements)


def _restore(module, saved):
    for key, value in module.__dict__.pop("_saved", {}).items():
        object.__setattr__(module, key, value)
    for _, child in module.named_children():
        _restore(child, saved)


def test_r1_through_the_real_discriminator_has_exact_weight_gradients():
    _, D = tiny(8, dtype=np.float64, seed=5)
    rng = np.random.default_rng(6)
    x = rng.standard_normal((2, 1, 8, 8)) * np.array([1.0, 2.0])[:, None, None, None]
    params = [D.blocks[0].conv0.weight, D.epilogue.fc.weight]

    def r1(*weights):
        _substitute(D, {id(p): w for p, w in zip(params, weights)})
        try:
            img = ns.Tensor(x, requires_grad=True)
            (g,) = ns.grad(D(img).sum(), [img], create_graph=True)
            return (g * g).sum()
        finally:
            _restore(D, {})

    check_backward(r1, [p.data.copy() for p in params], num_directions=1)


@pytest.mark.parametrize("cfg, res, match", [("huge", 64, "unknown cfg"), ("bench64", 32, "res 64 only"),
                                             ("cpu", 48, "power of two")])
def test_network_kwargs_errors(cfg, res, match):
    with pytest.raises(ValueError, match=match):
        network_kwargs(cfg, res)
