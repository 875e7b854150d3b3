"""Optimisation: Adam over Parameters, lazy-regularisation scaling, gradient sanitising, and the
generator's exponential moving average (StyleGAN2-ADA's training defaults: lr 0.0025,
betas (0, 0.99), eps 1e-8, G_ema half-life 10 kimg with a 5% ramp-up)."""
import numpy as np

from . import backend
from .autograd import no_grad
from .ops.adam import adam_step


class Adam:
    def __init__(self, params, lr=0.0025, betas=(0.0, 0.99), eps=1e-8):
        self.params = list(params)
        self.lr, self.betas, self.eps = float(lr), (float(betas[0]), float(betas[1])), float(eps)
        self.exp_avg = [p.xp.zeros_like(p.data) for p in self.params]
        self.exp_avg_sq = [p.xp.zeros_like(p.data) for p in self.params]
        self.steps = np.zeros(len(self.params), dtype=np.int64)

    def step(self):
        with no_grad():
            for i, p in enumerate(self.params):
                if p.grad is None:
                    continue
                self.steps[i] += 1
                adam_step(p.data, p.grad.data, self.exp_avg[i], self.exp_avg_sq[i], lr=self.lr,
                          beta1=self.betas[0], beta2=self.betas[1], eps=self.eps, step=int(self.steps[i]))

    def zero_grad(self):
        for p in self.params:
            p.grad = None

    def state_dict(self):
        state = {"steps": self.steps.copy(), "hyper": np.array([self.lr, *self.betas, self.eps])}
        for i in range(len(self.params)):
            state[f"m.{i}"] = backend.to_numpy(self.exp_avg[i]).copy()
            state[f"v.{i}"] = backend.to_numpy(self.exp_avg_sq[i]).copy()
        return state

    def load_state_dict(self, state):
        if len(state["steps"]) != len(self.params):
            raise ValueError(f"Adam state holds {len(state['steps'])} parameters, this optimiser has "
                             f"{len(self.params)}: the checkpoint belongs to another network configuration")
        self.steps = np.asarray(state["steps"], dtype=np.int64).copy()
        for i, p in enumerate(self.params):
            for key, target in ((f"m.{i}", self.exp_avg), (f"v.{i}", self.exp_avg_sq)):
                if tuple(state[key].shape) != tuple(p.shape):
                    raise ValueError(f"Adam state {key} has shape {state[key].shape}, parameter has {p.shape}")
                target[i] = p.xp.asarray(state[key], dtype=p.dtype).copy()


def lazy_regularization(lr, betas, interval):
    """Lr and betas for an optimiser stepped with a regulariser every `interval` steps
    (StyleGAN2 appendix: the regulariser's weight is scaled by interval, so the optimiser's
    moments are made correspondingly faster): c = interval / (interval + 1)."""
    c = interval / (interval + 1)
    return lr * c, (betas[0] ** c, betas[1] ** c)


def sanitize_gradients(params):
    """Replace NaN/Inf in gradients by 0 (as StyleGAN2-ADA does); return how many were bad."""
    bad = 0
    for p in params:
        if p.grad is None:
            continue
        g = p.grad.data
        xp = p.xp
        finite = xp.isfinite(g)
        count = int(g.size - int(finite.sum()))
        if count:
            bad += count
            p.grad.data = xp.where(finite, g, 0).astype(g.dtype)
    return bad


def ema_beta(batch_size, cur_nimg, ema_kimg=10.0, ema_rampup=0.05):
    """Per-step decay of G_ema: half-life ema_kimg thousand images, ramped up over training."""
    ema_nimg = ema_kimg * 1000
    if ema_rampup is not None and ema_rampup > 0:
        ema_nimg = min(ema_nimg, cur_nimg * ema_rampup)
    return 0.5 ** (batch_size / max(ema_nimg, 1e-8))


def ema_update(G_ema, G, beta):
    """G_ema = lerp(G, G_ema, beta) for parameters; buffers copied."""
    with no_grad():
        for p_ema, p in zip(G_ema.parameters(), G.parameters()):
            p_ema.data = p.data + (p_ema.data - p.data) * p.dtype.type(beta)
        for (_, b_ema), (_, b) in zip(G_ema.named_buffers(), G.named_buffers()):
            b_ema.data = b.data.copy()
