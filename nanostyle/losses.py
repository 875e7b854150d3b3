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

Diversity floor (optional, `diversity_weight`; on in the training presets, not in bench64): a mode-seeking term in
the spirit of MSGAN (Mao, Lee, Tseng, Ma, Yang, "Mode Seeking Generative Adversarial Networks
for Diverse Image Synthesis", CVPR 2019), made one-sided. The G batch is paired (row i with row
i + N/2); d = mean over pairs of the RMS pixel distance between the two images, both clamped to
the data range [-1, 1] first (distance bought with values outside it, such as a background darker
than black, counts for nothing, and has no gradient); the term is
  diversity_weight * max(0, 1 - d / d_real)
where d_real is the same mean distance over pairs of training images (metrics.mean_pair_distance). It
is zero, and leaves StyleGAN2's loss untouched, while the samples differ from each other as much
as the data's images do; it pushes only when they become more alike (mode collapse).
`diversity_on` (default True) lets the training loop hold the floor off altogether: with a
gate (train.py, `diversity_gate_kimg`) it pushes only while a running mean of d / d_real over
recent batches is below 1, not whenever one small batch happens to fall below it.
`diversity_space="gradients"` measures d (and d_real) on metrics.image_gradients instead of the
pixels: neighbour differences, which a uniform change of brightness or background level leaves
unchanged, so the floor cannot be met by drawing brighter or greyer samples, only different ones.

Style mixing (prob 0.9 by default): a second latent's w replaces the first's from a random
layer cutoff onwards, so no layer can rely on its neighbours sharing one w.
"""
import numpy as np

from . import backend
from .autograd import Tensor, concat, grad, no_grad
from .ops import bias_act, softplus


class StyleGAN2Loss:
    def __init__(self, G, D, augment_pipe=None, r1_gamma=10.0, style_mixing_prob=0.9, pl_weight=0.0,
                 pl_decay=0.01, pl_batch_shrink=2, diversity_weight=0.0, diversity_target=None,
                 diversity_space="pixels"):
        if diversity_space not in ("pixels", "gradients"):
            raise ValueError(f"diversity_space must be 'pixels' or 'gradients', got {diversity_space!r}")
        self.G, self.D, self.augment_pipe = G, D, augment_pipe
        self.diversity_weight, self.diversity_target = diversity_weight, diversity_target
        self.diversity_space = diversity_space
        self.diversity_on = True      # the training loop's gate (train.py); True: every batch judged alone
        self.r1_gamma, self.style_mixing_prob, self.pl_weight = r1_gamma, style_mixing_prob, pl_weight
        self.pl_decay, self.pl_batch_shrink = pl_decay, pl_batch_shrink
        self.pl_mean = 0.0

    def _mapping_with_mixing(self, z, rng, update_emas):
        ws = self.G.mapping(z, update_emas=update_emas)
        # Draw both numbers every time so the random stream is the same whatever happens.
        mix = rng.random() < self.style_mixing_prob
        cutoff = int(rng.integers(1, ws.shape[1])) if ws.shape[1] > 1 else 1
        z2 = rng.standard_normal(z.shape).astype(z.dtype)
        if mix and self.style_mixing_prob > 0 and ws.shape[1] > 1:
            ws2 = self.G.mapping(Tensor(z.xp.asarray(z2)), update_emas=False)
            ws = concat([ws[:, :cutoff], ws2[:, cutoff:]], axis=1)
        return ws

    def _generate(self, z, rng, update_emas=False):
        ws = self._mapping_with_mixing(z, rng, update_emas)
        return self.G.synthesis(ws, noise_mode="random", rng=rng)

    def _discriminate(self, img, rng):
        if self.augment_pipe is not None:
            img = self.augment_pipe(img, rng)
        return self.D(img)

    def generator_loss(self, gen_z, rng, update_emas=True):
        img = self._generate(gen_z, rng, update_emas=update_emas)
        logits = self._discriminate(img, rng)
        loss = softplus(-logits).mean()
        stats = {"loss_G": float(loss.numpy()), "fake_score_G": float(logits.numpy().mean())}
        if self.diversity_weight > 0:
            floor, floor_stats = self.diversity_loss(img)
            stats.update(floor_stats)
            if floor is not None:
                loss = loss + floor
        return loss, stats

    def diversity_loss(self, img):
        """(term or None, stats): the diversity floor of the module docstring for images [N, ...]."""
        if self.diversity_target is None or self.diversity_target <= 0:
            raise ValueError("diversity_weight > 0 needs diversity_target, the mean distance between "
                             "pairs of training images (metrics.mean_pair_distance)")
        half = img.shape[0] // 2
        if half == 0:
            return None, {}
        img = bias_act(img, act="linear", clamp=1.0)   # the data range: [-1, 1]
        diff = img[:half] - img[half:2 * half]
        if self.diversity_space == "pixels":
            distance = (diff.square().mean(axis=(1, 2, 3)) + 1e-8).sqrt().mean()
        else:   # RMS over metrics.image_gradients' features: neighbour differences of the pair's difference
            dx, dy = diff[:, :, :, 1:] - diff[:, :, :, :-1], diff[:, :, 1:, :] - diff[:, :, :-1, :]
            count = dx[0].size + dy[0].size
            distance = ((dx.square().sum(axis=(1, 2, 3)) + dy.square().sum(axis=(1, 2, 3))) * (1.0 / count)
                        + 1e-8).sqrt().mean()
        ratio = float(distance.numpy()) / self.diversity_target
        stats = {"pair_distance": ratio}
        if ratio >= 1.0 or not self.diversity_on:
            return None, dict(stats, loss_diversity=0.0)
        term = (1.0 - distance * (1.0 / self.diversity_target)) * self.diversity_weight
        return term, dict(stats, loss_diversity=float(term.numpy()))

    def discriminator_loss(self, real_img, gen_z, rng):
        with no_grad():
            fake = self._generate(gen_z, rng)
        fake_logits = self._discriminate(Tensor(fake.data), rng)
        real_logits = self._discriminate(real_img, rng)
        loss = softplus(fake_logits).mean() + softplus(-real_logits).mean()
        real_np = backend.to_numpy(real_logits.data).reshape(-1)
        return loss, {"loss_D": float(loss.numpy()), "real_score": float(real_np.mean()),
                      "fake_score": float(fake_logits.numpy().mean()), "real_logits": real_np}

    def r1_loss(self, real_img, rng, gain):
        real = Tensor(real_img.data, requires_grad=True)
        logits = self._discriminate(real, rng)
        (real_grad,) = grad(logits.sum(), [real], create_graph=True)
        penalty = real_grad.square().sum(axis=(1, 2, 3))
        loss = penalty.mean() * (self.r1_gamma / 2 * gain)
        return loss, {"r1_penalty": float(penalty.numpy().mean()), "loss_r1": float(loss.numpy())}

    def pl_loss(self, gen_z, rng, gain):
        """Path-length penalty on a shrunk batch; returns (loss, stats) and updates pl_mean."""
        batch = max(gen_z.shape[0] // self.pl_batch_shrink, 1)
        z = Tensor(gen_z.data[:batch])
        ws = self._mapping_with_mixing(z, rng, update_emas=False)
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
