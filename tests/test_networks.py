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


# ---- conditional networks (c_dim > 0) ------------------------------------------------------------

def tiny_conditional(res, c_dim=3, dtype=np.float32, seed=0):
    G_kwargs, D_kwargs = network_kwargs("tiny", res)
    return (Generator(img_resolution=res, c_dim=c_dim, seed=seed, dtype=dtype, **G_kwargs),
            Discriminator(img_resolution=res, c_dim=c_dim, seed=seed + 1, dtype=dtype, **D_kwargs))


def test_conditional_shapes_parameters_and_clear_errors():
    G, D = tiny_conditional(16)
    G_plain, D_plain = tiny(16)
    # the label's embedding widens the first mapping layer by w_dim inputs; D gains a mapping network
    # for cmap, and its last layer gives cmap_dim (the 4x4 width) features instead of one score
    embed = 3 * G.w_dim + G.w_dim
    assert G.num_parameters() == G_plain.num_parameters() + embed + G.w_dim * G.w_dim
    assert D.epilogue.cmap_dim == 16 and D.epilogue.out.weight.shape == (16, 16)
    assert len(D.mapping.layers) == 2 and not hasattr(D.mapping, "w_avg")
    z = ns.Tensor(np.random.default_rng(0).standard_normal((4, G.z_dim)).astype(np.float32))
    c = ns.Tensor(np.eye(3, dtype=np.float32)[[0, 1, 2, 0]])
    with ns.no_grad():
        img = G(z, c, noise_mode="const")
        assert img.shape == (4, 1, 16, 16) and D(img, c).shape == (4, 1)
        with pytest.raises(ValueError, match=r"conditional on 3 classes: c must be one-hot labels \[N, 3\], got None"):
            G(z)
        with pytest.raises(ValueError, match="conditional on 3 classes"):
            D(img)
        with pytest.raises(ValueError, match="unconditional"):
            G_plain(z, c)
        with pytest.raises(ValueError, match="unconditional"):
            D_plain(img, c)
    # generate takes one index for all, an index per image, or one-hot rows, and they agree
    by_index = G.generate(seeds=range(4), c=[0, 1, 2, 0])
    np.testing.assert_array_equal(by_index, G.generate(seeds=range(4), c=c.data))
    np.testing.assert_allclose(by_index[:1], G.generate(seeds=[0], c=0), atol=1e-5)   # a batch of 1: other BLAS sums
    assert np.abs(G.generate(seeds=[0], c=1) - by_index[:1]).max() > 1e-4    # the label matters
    with pytest.raises(ValueError, match=r"class index 3 is out of range: this generator has 3 classes \(0-2\)"):
        G.generate(seeds=[0], c=3)
    with pytest.raises(ValueError, match="conditional on 3 classes: pass c"):
        G.generate(seeds=[0])
    with pytest.raises(ValueError, match="unconditional .* takes no class label"):
        G_plain.generate(seeds=[0], c=0)


def test_gradients_through_the_label_path_of_the_mapping_float64():
    G, _ = tiny_conditional(8, dtype=np.float64, seed=2)
    rng = np.random.default_rng(3)
    z = rng.standard_normal((3, G.z_dim))
    params = [G.mapping.embed.weight, G.mapping.embed.bias, G.mapping.layers[0].weight]

    def mapping(c, *weights):
        _substitute(G, {id(p): w for p, w in zip(params, weights)})
        try:
            return G.mapping(ns.Tensor(z), c)
        finally:
            _restore(G, {})

    # the label itself as a continuous input too: the embedding is linear in it
    c = np.eye(3)[[0, 2, 1]] + 0.1 * rng.standard_normal((3, 3))
    check_backward(mapping, [c] + [p.data.copy() + 0.1 * rng.standard_normal(p.shape) for p in params],
                   num_directions=2)


def test_gradients_through_the_projection_of_the_discriminator_float64():
    _, D = tiny_conditional(8, dtype=np.float64, seed=4)
    rng = np.random.default_rng(5)
    img = rng.standard_normal((2, 1, 8, 8))
    c = np.eye(3)[[1, 2]]
    params = [D.mapping.embed.weight, D.mapping.layers[1].weight, D.epilogue.out.weight, D.epilogue.out.bias]

    def score(x, *weights):
        _substitute(D, {id(p): w for p, w in zip(params, weights)})
        try:
            return D(x, ns.Tensor(c))
        finally:
            _restore(D, {})

    check_backward(score, [img] + [p.data.copy() + 0.1 * rng.standard_normal(p.shape) for p in params],
                   num_directions=2)

    # R1 through the conditional D: the input gradient, differentiated again with respect to the
    # label path's weights and the projection
    def r1(*weights):
        _substitute(D, {id(p): w for p, w in zip(params, weights)})
        try:
            x = ns.Tensor(img, requires_grad=True)
            (g,) = ns.grad(D(x, ns.Tensor(c)).sum(), [x], create_graph=True)
            return (g * g).sum()
        finally:
            _restore(D, {})

    check_backward(r1, [p.data.copy() for p in params], num_directions=1)


def test_the_projection_scores_each_label_by_its_own_embedding():
    """D(x, c) = <out(x), cmap(c)> / sqrt(cmap_dim): computed by hand from D's parts."""
    _, D = tiny_conditional(8, dtype=np.float64, seed=6)
    img = ns.Tensor(np.random.default_rng(7).standard_normal((2, 1, 8, 8)))
    c = ns.Tensor(np.eye(3)[[2, 0]])
    with ns.no_grad():
        x = None
        for block in D.blocks:
            x = block(x, img)
        e = D.epilogue
        h = e.conv(ns.ops.minibatch_std(x, group_size=e.mbstd_group_size, num_channels=e.mbstd_num_channels))
        out = e.out(e.fc(h.reshape(h.shape[0], -1))).data
        cmap = D.mapping(None, c).data
        expected = (out * cmap).sum(axis=1, keepdims=True) / np.sqrt(e.cmap_dim)
        np.testing.assert_allclose(D(img, c).data, expected, rtol=1e-12)
