"""StyleGAN2 losses: non-saturating logistic GAN loss, lazy R1, style mixing.

  G:  softplus(-D(aug(G(z))))                                   (Goodfellow et al. 2014, NS)
  D:  softplus(D(aug(G(z)))) + softplus(-D(aug(x)))
  R1: gamma / 2 * |d D(aug(x)) / dx|^2, every r1_interval D steps, scaled by that interval
      (Mescheder et al. 2018; StyleGAN2's lazy regularisation).

R1's inner gradient is taken with create_graph=True with respect to the real images only: the
autograd prunes every weight-gradient branch from that pass, and the outer backward then
differentiates the input gradient with respect to the weights exactly (second order).

Path-length regularisation (StyleGAN2 sec. 3.2, optional, pl_weight 2 on GPUs, off on the CPU):
  |J_w^T y|, y ~ N(0, I) / sqrt(H W), pulled towards its running mean (decay 0.01), on half the
  batch every G_reg_interval G steps.

Diversity floor (optional; diversity.py): an extra term of G's loss against mode collapse, added
by the DiversityFloor given as `diversity_floor`; None leaves StyleGAN2's loss as it is.

Style mixing (prob 0.9 by default): a second latent's w replaces the first's from a random
layer cutoff onwards, so no layer can rely on its neighbours sharing one w.

Conditional networks (c_dim > 0) take one-hot labels with every batch: `c` for G's images (and
D's judgement of them), `real_c` for the reals; the second latent of style mixing keeps c.
Unconditional ones take None.
"""
import numpy as np

from . import backend
from .autograd import Tensor, concat, grad, no_grad
from .ops import softplus


class StyleGAN2Loss:
    def __init__(self, G, D, augment_pipe=None, r1_gamma=10.0, style_mixing_prob=0.9, pl_weight=0.0,
                 pl_decay=0.01, pl_batch_shrink=2, diversity_floor=None):
        self.G, self.D, self.augment_pipe = G, D, augment_pipe
        self.diversity_floor = diversity_floor
        self.r1_gamma, self.style_mixing_prob, self.pl_weight = r1_gamma, style_mixing_prob, pl_weight
        self.pl_decay, self.pl_batch_shrink = pl_decay, pl_batch_shrink
        self.pl_mean = 0.0

    def _mapping_with_mixing(self, z, c, rng, update_emas):
        ws = self.G.mapping(z, c, update_emas=update_emas)
        # Draw both numbers every time so the random stream is the same whatever happens.
        mix = rng.random() < self.style_mixing_prob
        cutoff = int(rng.integers(1, ws.shape[1])) if ws.shape[1] > 1 else 1
        z2 = rng.standard_normal(z.shape).astype(z.dtype)
        if mix and self.style_mixing_prob > 0 and ws.shape[1] > 1:
            ws2 = self.G.mapping(Tensor(z.xp.asarray(z2)), c, update_emas=False)
            ws = concat([ws[:, :cutoff], ws2[:, cutoff:]], axis=1)
        return ws

    def _generate(self, z, c, rng, update_emas=False):
        ws = self._mapping_with_mixing(z, c, rng, update_emas)
        return self.G.synthesis(ws, noise_mode="random", rng=rng)

    def _discriminate(self, img, c, rng):
        if self.augment_pipe is not None:
            img = self.augment_pipe(img, rng)
        return self.D(img, c)

    def generator_loss(self, gen_z, rng, update_emas=True, c=None):
        img = self._generate(gen_z, c, rng, update_emas=update_emas)
        logits = self._discriminate(img, c, rng)
        loss = softplus(-logits).mean()
        stats = {"loss_G": float(loss.numpy()), "fake_score_G": float(logits.numpy().mean())}
        if self.diversity_floor is not None:
            term, floor_stats = self.diversity_floor.term(img, c)
            stats.update(floor_stats)
            if term is not None:
                loss = loss + term
        return loss, stats

    def discriminator_loss(self, real_img, gen_z, rng, real_c=None, gen_c=None):
        with no_grad():
            fake = self._generate(gen_z, gen_c, rng)
        fake_logits = self._discriminate(Tensor(fake.data), gen_c, rng)
        real_logits = self._discriminate(real_img, real_c, rng)
        loss = softplus(fake_logits).mean() + softplus(-real_logits).mean()
        real_np = backend.to_numpy(real_logits.data).reshape(-1)
        return loss, {"loss_D": float(loss.numpy()), "real_score": float(real_np.mean()),
                      "fake_score": float(fake_logits.numpy().mean()), "real_logits": real_np}

    def r1_loss(self, real_img, rng, gain, c=None):
        real = Tensor(real_img.data, requires_grad=True)
        logits = self._discriminate(real, c, rng)
        (real_grad,) = grad(logits.sum(), [real], create_graph=True)
        penalty = real_grad.square().sum(axis=(1, 2, 3))
        loss = penalty.mean() * (self.r1_gamma / 2 * gain)
        return loss, {"r1_penalty": float(penalty.numpy().mean()), "loss_r1": float(loss.numpy())}

    def pl_loss(self, gen_z, rng, gain, c=None):
        """Path-length penalty on a shrunk batch; returns (loss, stats) and updates pl_mean."""
        batch = max(gen_z.shape[0] // self.pl_batch_shrink, 1)
        z = Tensor(gen_z.data[:batch])
        c = None if c is None else Tensor(c.data[:batch])
        ws = self._mapping_with_mixing(z, c, rng, update_emas=False)
        img = self.G.synthesis(ws, noise_mode="random", rng=rng)
        H, W = img.shape[2:]
        noise = (rng.standard_normal(img.shape) / float(np.sqrt(H * W))).astype(img.dtype)
        (ws_grad,) = grad((img * Tensor(img.xp.asarray(noise))).sum(), [ws], create_graph=True)
        lengths = (ws_grad.square().sum(axis=2).mean(axis=1) + 1e-12).sqrt()
        mean_length = float(lengths.numpy().mean())
        self.pl_mean = self.pl_mean + (mean_length - self.pl_mean) * self.pl_decay
        penalty = (lengths - self.pl_mean).square()
        loss = penalty.mean() * (self.pl_weight * gain)
        return loss, {"pl_length": mean_length, "pl_penalty": float(penalty.numpy().mean())}
