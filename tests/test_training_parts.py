"""Augmentation, losses, optimiser and EMA: identities, statistics, gradient flow, formulas."""
import math

import numpy as np
import pytest

import nanostyle as ns
from nanostyle.augment import AdaController, AugmentPipe
from nanostyle.gradcheck import check_backward
from nanostyle.losses import StyleGAN2Loss
from nanostyle.ops.adam import adam_step
from nanostyle.optim import Adam, ema_beta, ema_update, lazy_regularization, sanitize_gradients
from test_networks import tiny


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


def test_losses_are_finite_and_r1_is_positive():
    G, D = tiny(16)
    loss = StyleGAN2Loss(G, D, AugmentPipe(), r1_gamma=1.0, style_mixing_prob=0.9)
    rng = np.random.default_rng(0)
    real = ns.Tensor(rng.uniform(-1, 1, (4, 1, 16, 16)).astype(np.float32))
    z = ns.Tensor(rng.standard_normal((4, G.z_dim)).astype(np.float32))
    for value, stats in (loss.generator_loss(z, rng), loss.discriminator_loss(real, z, rng), loss.r1_loss(real, rng, 16)):
        assert np.isfinite(value.item())
    assert stats["r1_penalty"] > 0


def test_adam_step_matches_the_formula():
    rng = np.random.default_rng(1)
    p, m, v = rng.standard_normal(10), np.zeros(10), np.zeros(10)
    p_ref, m_ref, v_ref = p.copy(), m.copy(), v.copy()
    for t in range(1, 4):
        g = rng.standard_normal(10)
        adam_step(p, g, m, v, lr=0.01, beta1=0.5, beta2=0.9, eps=1e-8, step=t)
        m_ref = 0.5 * m_ref + 0.5 * g
        v_ref = 0.9 * v_ref + 0.1 * g * g
        p_ref = p_ref - 0.01 * (m_ref / (1 - 0.5 ** t)) / (np.sqrt(v_ref / (1 - 0.9 ** t)) + 1e-8)
    np.testing.assert_allclose(p, p_ref, rtol=1e-13)
    with pytest.raises(ValueError, match="adam_step"):
        adam_step(p, g[:3], m, v, lr=0.1, beta1=0, beta2=0.9, eps=1e-8, step=1)


def test_optimizer_helpers():
    lr, betas = lazy_regularization(0.0025, (0.0, 0.99), 16)
    assert math.isclose(lr, 0.0025 * 16 / 17) and math.isclose(betas[1], 0.99 ** (16 / 17))
    assert ema_beta(16, 0) == 0.0
    assert math.isclose(ema_beta(32, 10 ** 9, ema_kimg=10), 0.5 ** (32 / 10000))
    param = ns.nn.Parameter(np.ones(4))
    param.grad = ns.Tensor(np.array([1.0, np.nan, np.inf, -np.inf]))
    assert sanitize_gradients([param]) == 3 and np.array_equal(param.grad.data, [1, 0, 0, 0])
    G, _ = tiny(16, seed=0)
    G2, _ = tiny(16, seed=9)
    ema_update(G2, G, 0.25)
    a, b = G.parameters()[0].data, G2.parameters()[0].data
    assert not np.array_equal(a, b)


def test_a_few_training_steps_change_weights_and_stay_finite():
    G, D = tiny(16)
    opt_G, opt_D = Adam(G.parameters()), Adam(D.parameters())
    loss = StyleGAN2Loss(G, D, None, style_mixing_prob=0.0)
    rng = np.random.default_rng(0)
    before = [p.data.copy() for p in G.parameters() + D.parameters()]
    real = ns.Tensor(rng.uniform(-1, 1, (4, 1, 16, 16)).astype(np.float32))
    for _ in range(3):
        z = ns.Tensor(rng.standard_normal((4, G.z_dim)).astype(np.float32))
        value, _ = loss.generator_loss(z, rng)
        opt_G.zero_grad(); D.zero_grad(); value.backward(); opt_G.step()
        value, _ = loss.discriminator_loss(real, z, rng)
        opt_D.zero_grad(); value.backward(); opt_D.step()
        assert np.isfinite(value.item())
    after = [p.data for p in G.parameters() + D.parameters()]
    changed = sum(not np.array_equal(a, b) for a, b in zip(before, after))
    assert changed > 0.8 * len(before)
    state = opt_D.state_dict()
    fresh = Adam(D.parameters())
    fresh.load_state_dict(state)
    assert np.array_equal(fresh.exp_avg_sq[0], opt_D.exp_avg_sq[0])


def test_path_length_regularisation_runs_and_tracks_its_mean():
    G, D = tiny(16)
    loss = StyleGAN2Loss(G, D, None, style_mixing_prob=0.5, pl_weight=2.0)
    rng = np.random.default_rng(0)
    z = ns.Tensor(rng.standard_normal((4, G.z_dim)).astype(np.float32))
    value, stats = loss.pl_loss(z, rng, gain=4)
    assert np.isfinite(value.item()) and stats["pl_length"] > 0 and loss.pl_mean > 0
    value.backward()
    assert G.mapping.layers[0].weight.grad is not None
    assert np.abs(G.synthesis.blocks[-1].conv1.weight.grad.data).sum() > 0


def test_path_length_gradient_is_exact_float64():
    G, D = tiny(8, dtype=np.float64, seed=2)
    z = np.random.default_rng(1).standard_normal((2, G.z_dim))
    param = G.synthesis.blocks[1].conv1.weight
    noise = np.random.default_rng(2).standard_normal((2, 1, 8, 8))

    def path_length(w):
        object.__setattr__(G.synthesis.blocks[1].conv1, "weight", w)
        try:
            ws = G.mapping(ns.Tensor(z))
            img = G.synthesis(ws, noise_mode="const")
            (g,) = ns.grad((img * ns.Tensor(noise)).sum(), [ws], create_graph=True)
            return (g * g).sum()
        finally:
            object.__setattr__(G.synthesis.blocks[1].conv1, "weight", param)

    check_backward(path_length, [param.data.copy()], num_directions=1)


def test_mean_pair_distance_is_the_mean_rms_distance_over_distinct_pairs():
    from nanostyle.metrics import mean_pair_distance
    x = np.random.default_rng(3).uniform(-1, 1, (7, 1, 5, 6))
    brute = [np.sqrt(((x[i] - x[j]) ** 2).mean()) for i in range(7) for j in range(i + 1, 7)]
    assert mean_pair_distance(x) == pytest.approx(np.mean(brute), rel=1e-9)
    assert mean_pair_distance(np.repeat(x[:1], 5, axis=0)) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="at least 2"):
        mean_pair_distance(x[:1])


def _floor_loss(weight=2.0, target=0.5, space="pixels"):
    G, D = tiny(16, dtype=np.float64)
    return StyleGAN2Loss(G, D, None, diversity_weight=weight, diversity_target=target, diversity_space=space)


def test_diversity_floor_is_zero_for_varied_images_and_pushes_alike_ones_apart():
    loss = _floor_loss(target=0.5)
    rng = np.random.default_rng(4)
    varied = rng.uniform(-1, 1, (4, 1, 8, 8))                 # pair distance ~0.8 > target
    term, stats = loss.diversity_loss(ns.Tensor(varied))
    assert term is None and stats["loss_diversity"] == 0.0 and stats["pair_distance"] > 1
    base = rng.uniform(-1, 1, (1, 1, 8, 8))
    alike = ns.Tensor(base + 0.05 * rng.standard_normal((4, 1, 8, 8)), requires_grad=True)
    term, stats = loss.diversity_loss(alike)
    assert 0 < stats["pair_distance"] < 0.5 and stats["loss_diversity"] == pytest.approx(2.0 * (1 - stats["pair_distance"]))
    (g,) = ns.grad(term, [alike])
    # a small step against the gradient moves each pair apart, so the term falls
    stepped, _ = loss.diversity_loss(ns.Tensor(alike.data - 0.01 * g.data))
    assert stepped.item() < term.item()


def test_diversity_floor_held_off_by_its_gate_still_reports_the_distance():
    loss = _floor_loss(target=0.5)
    rng = np.random.default_rng(6)
    alike = ns.Tensor(rng.uniform(-1, 1, (1, 1, 8, 8)) + 0.05 * rng.standard_normal((4, 1, 8, 8)))
    loss.diversity_on = False
    term, stats = loss.diversity_loss(alike)
    assert term is None and stats["loss_diversity"] == 0.0 and 0 < stats["pair_distance"] < 0.5
    loss.diversity_on = True
    term, stats = loss.diversity_loss(alike)
    assert term is not None and stats["loss_diversity"] > 0


def test_diversity_gate_follows_the_running_mean_not_one_batch():
    from types import SimpleNamespace
    from nanostyle.train import _update_diversity_gate

    def run_with(gate_kimg):
        return SimpleNamespace(config=SimpleNamespace(batch=16, diversity_gate_kimg=gate_kimg, diversity_kimg=0.0),
                               loss=SimpleNamespace(diversity_on=True), diversity_mean=None)

    run = run_with(0.16)                       # half-life: 10 batches of 16
    _update_diversity_gate(run, {"pair_distance": 0.8})
    assert run.diversity_mean == 0.8 and run.loss.diversity_on            # first batch: the mean is it
    for _ in range(60):                                                   # samples spread out
        _update_diversity_gate(run, {"pair_distance": 1.3})
    assert 1.25 < run.diversity_mean < 1.3 and not run.loss.diversity_on
    _update_diversity_gate(run, {"pair_distance": 0.5})                   # one close batch: noise
    assert run.diversity_mean > 1.2 and not run.loss.diversity_on
    steps = 0
    while not run.loss.diversity_on:                                      # a lasting fall: collapse
        _update_diversity_gate(run, {"pair_distance": 0.6})
        steps += 1
    assert 5 <= steps <= 15 and run.diversity_mean < 1.0
    stats = {"pair_distance": 0.6}
    _update_diversity_gate(run, stats)
    assert stats["pair_distance_mean"] == run.diversity_mean               # logged with the stats
    ungated = run_with(0.0)                    # no gate: every batch judged alone, nothing kept
    for ratio in (1.3, 1.3, 1.3):
        _update_diversity_gate(ungated, {"pair_distance": ratio})
    assert ungated.diversity_mean is None and ungated.loss.diversity_on


def test_diversity_floor_closes_for_good_at_diversity_kimg():
    from types import SimpleNamespace
    from nanostyle.train import _open_diversity_gate

    def run_at(kimg, until, mean=None):
        run = SimpleNamespace(config=SimpleNamespace(diversity_kimg=until), cur_nimg=int(kimg * 1000),
                              loss=SimpleNamespace(diversity_on=None), diversity_mean=mean)
        _open_diversity_gate(run)
        return run.loss.diversity_on

    assert run_at(39.984, 40.0) and not run_at(40.0, 40.0) and not run_at(52.0, 40.0)
    assert not run_at(20.0, 40.0, mean=1.2) and run_at(20.0, 40.0, mean=0.9)   # the gate still rules before
    assert not run_at(41.0, 40.0, mean=0.3)                                     # ...and nothing opens it after
    # 0, and None as in checkpoints saved before the option existed: the whole run
    assert run_at(500.0, 0.0) and run_at(500.0, None) and not run_at(500.0, None, mean=1.1)


def test_diversity_floor_gradient_matches_finite_differences():
    loss = _floor_loss(weight=1.5, target=3.0)                # target above any distance: term active
    x = np.random.default_rng(5).uniform(-1, 1, (6, 1, 4, 4))
    check_backward(lambda img: loss.diversity_loss(img)[0], [x])


def test_diversity_floor_on_gradients_measures_structure_not_brightness():
    from nanostyle.metrics import image_gradients
    rng = np.random.default_rng(7)
    x = rng.uniform(-0.8, 0.8, (6, 1, 8, 9))
    loss = _floor_loss(weight=1.0, target=1.0, space="gradients")
    _, stats = loss.diversity_loss(ns.Tensor(x))
    f = image_gradients(x)
    assert stats["pair_distance"] == pytest.approx(np.sqrt(((f[:3] - f[3:]) ** 2).mean(axis=1) + 1e-8).mean())
    # a different brightness or background level per image, within the data range: no distance bought
    shifted = x + rng.uniform(-0.15, 0.15, (6, 1, 1, 1))
    assert loss.diversity_loss(ns.Tensor(shifted))[1]["pair_distance"] == pytest.approx(stats["pair_distance"])
    _, pixels = _floor_loss(weight=1.0, target=1.0).diversity_loss(ns.Tensor(shifted))
    _, pixels_before = _floor_loss(weight=1.0, target=1.0).diversity_loss(ns.Tensor(x))
    assert pixels["pair_distance"] != pytest.approx(pixels_before["pair_distance"], rel=1e-3)   # in pixels it is
    check_backward(lambda img: _floor_loss(weight=1.5, target=30.0, space="gradients").diversity_loss(img)[0],
                   [rng.uniform(-1, 1, (4, 1, 4, 5))])
    with pytest.raises(ValueError, match="'pixels' or 'gradients'"):
        _floor_loss(space="edges")


def test_diversity_floor_counts_no_distance_outside_the_data_range():
    loss = _floor_loss(weight=1.0, target=0.5)
    rng = np.random.default_rng(6)
    base = rng.uniform(-1, 1, (2, 1, 8, 8))
    darker = base.copy()
    darker[:, :, :3] = -1.0                                    # black background rows ...
    x = np.concatenate([darker, darker])
    x[2:, :, :3] = rng.uniform(-2.0, -1.2, (2, 1, 3, 8))       # ... and "darker than black" ones
    img = ns.Tensor(x, requires_grad=True)
    term, stats = loss.diversity_loss(img)
    assert stats["pair_distance"] == pytest.approx(0.0, abs=1e-3) and term.item() == pytest.approx(1.0, abs=1e-3)
    (g,) = ns.grad(term, [img])
    assert np.all(g.data[2:, :, :3] == 0)                     # no gradient pushes further out of range


def test_diversity_floor_without_a_target_says_what_is_missing():
    loss = _floor_loss(target=None)
    with pytest.raises(ValueError, match="diversity_target"):
        loss.diversity_loss(ns.Tensor(np.zeros((4, 1, 8, 8))))


def test_generator_loss_adds_the_floor_when_samples_are_alike():
    G, D = tiny(16)
    rng = np.random.default_rng(0)
    z = ns.Tensor(rng.standard_normal((4, G.z_dim)).astype(np.float32))
    plain, plain_stats = StyleGAN2Loss(G, D, None, style_mixing_prob=0.0).generator_loss(z, np.random.default_rng(1))
    # an untrained G's samples are nearly alike: far below a target of 10, so the floor is on
    floored, stats = StyleGAN2Loss(G, D, None, style_mixing_prob=0.0, diversity_weight=1.0,
                                   diversity_target=10.0).generator_loss(z, np.random.default_rng(1))
    assert stats["loss_diversity"] > 0.9
    assert floored.item() == pytest.approx(plain.item() + stats["loss_diversity"], rel=1e-5)
    assert "loss_diversity" not in plain_stats
