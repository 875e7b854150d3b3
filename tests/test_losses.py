"""StyleGAN2's losses: finite values, R1 positive, a few optimiser steps, path-length
regularisation (its gradient exact in float64), the diversity floor added to G's loss."""
import numpy as np
import pytest

import nanostyle as ns
from nanostyle.augment import AugmentPipe
from nanostyle.diversity import DiversityConfig, DiversityFloor
from nanostyle.gradcheck import check_backward
from nanostyle.losses import StyleGAN2Loss
from nanostyle.optim import Adam
from test_networks import tiny


def test_losses_are_finite_and_r1_is_positive():
    G, D = tiny(16)
    loss = StyleGAN2Loss(G, D, AugmentPipe(), r1_gamma=1.0, style_mixing_prob=0.9)
    rng = np.random.default_rng(0)
    real = ns.Tensor(rng.uniform(-1, 1, (4, 1, 16, 16)).astype(np.float32))
    z = ns.Tensor(rng.standard_normal((4, G.z_dim)).astype(np.float32))
    for value, stats in (loss.generator_loss(z, rng), loss.discriminator_loss(real, z, rng), loss.r1_loss(real, rng, 16)):
        assert np.isfinite(value.item())
    assert stats["r1_penalty"] > 0


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


def test_generator_loss_adds_the_floor_when_samples_are_alike():
    G, D = tiny(16)
    rng = np.random.default_rng(0)
    z = ns.Tensor(rng.standard_normal((4, G.z_dim)).astype(np.float32))
    plain, plain_stats = StyleGAN2Loss(G, D, None, style_mixing_prob=0.0).generator_loss(z, np.random.default_rng(1))
    # an untrained G's samples are nearly alike: far below a target of 10, so the floor is on
    floor = DiversityFloor(DiversityConfig(weight=1.0, until_kimg=0.0), target=10.0, batch=4)
    floored, stats = StyleGAN2Loss(G, D, None, style_mixing_prob=0.0,
                                   diversity_floor=floor).generator_loss(z, np.random.default_rng(1))
    assert stats["loss_diversity"] > 0.9
    assert floored.item() == pytest.approx(plain.item() + stats["loss_diversity"], rel=1e-5)
    assert "loss_diversity" not in plain_stats
