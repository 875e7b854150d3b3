"""StyleGAN2 networks (Karras et al. 2020, config F), with StyleGAN2-ADA's layer semantics.

Generator = MappingNetwork (z -> w, 8 or 2 equalised FC layers with lr_mul 0.01, w_avg tracked
for truncation) + SynthesisNetwork ('skip' architecture: a learned 4x4 constant, per resolution
two modulated 3x3 convolutions with noise, a toRGB per block whose images are upsampled and
summed). Discriminator = 'resnet' blocks (two 3x3 convolutions, the second downsampling, plus
a 1x1 downsampling skip, both scaled by sqrt(1/2)) and an epilogue with minibatch stddev.
Conditional networks (c_dim > 0 classes, one-hot labels c; StyleGAN2-ADA's conditioning): G's
mapping embeds c by a dense layer and concatenates normalize_2nd_moment of z and of the
embedding; D maps c through its own mapping network to cmap [N, cmap_dim], and its epilogue's
last layer gives cmap_dim features x, scored by projection: (x * cmap).sum(1) / sqrt(cmap_dim).
Channels per resolution: min(channel_base / res, channel_max). `use_noise=False` builds a
generator without the per-pixel noise inputs (no noise_strength, no noise_const; noise_mode is
then accepted and ignored).

Differences from the reference, all reparameterisations that change no capacity: every
convolution is a cross-correlation (the reference flips the kernel of its upsampling layers),
and parameters are initialised from this module's own seeded NumPy generator.
"""
import math

import numpy as np

from . import backend
from .autograd import Tensor, concat, no_grad
from .nn import Module, Parameter
from .ops import (bias_act, conv2d_resample, linear, minibatch_std, modulated_conv2d,
                  noise_injection, setup_filter, upsample2d)
from .ops.bias_act import ACTIVATIONS

RESAMPLE_FILTER = [1, 3, 3, 1]


def _rng(seed):
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def normalize_2nd_moment(x, eps=1e-8):
    return x * ((x * x).mean(axis=1, keepdims=True) + eps).rsqrt()


class FullyConnectedLayer(Module):
    """Equalised-lr dense layer: weights stored as randn / lr_mul, scaled at run time."""

    def __init__(self, in_features, out_features, bias=True, activation="linear", lr_multiplier=1.0,
                 bias_init=0.0, rng=None, dtype=np.float32):
        super().__init__()
        self.activation, self.lr_multiplier = activation, lr_multiplier
        self.weight = Parameter((rng.standard_normal((out_features, in_features)) / lr_multiplier).astype(dtype))
        self.bias = Parameter(np.full(out_features, bias_init, dtype=dtype)) if bias else None

    def forward(self, x):
        return linear(x, self.weight, self.bias, lr_mul=self.lr_multiplier, activation=self.activation)


class MappingNetwork(Module):
    """z -> w: normalise z's second moment (and, when c_dim > 0, an embedding of the label c,
    concatenated with it), then `num_layers` equalised dense layers with lrelu and learning-rate
    multiplier `lr_multiplier`, each w repeated `num_ws` times.

    forward(z, c=None, truncation_psi=1.0, truncation_cutoff=None, update_emas=False): z float
    Tensor [N, z_dim], c one-hot [N, c_dim] -> ws Tensor [N, num_ws, w_dim]. `w_avg` (buffer
    [w_dim]) is the running mean of w, updated when update_emas (training's G step);
    truncation_psi < 1 pulls the first `truncation_cutoff` ws (all by default) that far towards
    it. z_dim 0 maps the label alone; num_ws None returns w [N, w_dim] as it is; w_avg_beta None
    tracks no w_avg (both as the discriminator's cmap needs).
    """

    def __init__(self, z_dim, w_dim, num_ws, num_layers=8, lr_multiplier=0.01, w_avg_beta=0.995,
                 c_dim=0, rng=None, dtype=np.float32):
        super().__init__()
        self.z_dim, self.w_dim, self.num_ws, self.w_avg_beta = z_dim, w_dim, num_ws, w_avg_beta
        self.c_dim = c_dim
        embed_features = w_dim if c_dim else 0
        if c_dim:
            self.embed = FullyConnectedLayer(c_dim, embed_features, rng=rng, dtype=dtype)
        features = [z_dim + embed_features] + [w_dim] * num_layers
        self.layers = [FullyConnectedLayer(features[i], features[i + 1], activation="lrelu",
                                           lr_multiplier=lr_multiplier, rng=rng, dtype=dtype)
                       for i in range(num_layers)]
        if w_avg_beta is not None:
            self.register_buffer("w_avg", np.zeros(w_dim, dtype=dtype))

    def forward(self, z, c=None, truncation_psi=1.0, truncation_cutoff=None, update_emas=False):
        x = None
        if self.z_dim:
            if z.ndim != 2 or z.shape[1] != self.z_dim:
                raise ValueError(f"mapping: z must be [N, {self.z_dim}], got {tuple(z.shape)}")
            x = normalize_2nd_moment(z)
        if self.c_dim:
            if c is None or c.ndim != 2 or c.shape[1] != self.c_dim or (x is not None and c.shape[0] != x.shape[0]):
                raise ValueError(f"mapping: this network is conditional on {self.c_dim} classes: c must be "
                                 f"one-hot labels [N, {self.c_dim}], got {None if c is None else tuple(c.shape)}")
            y = normalize_2nd_moment(self.embed(c))
            x = y if x is None else concat([x, y], axis=1)
        elif c is not None:
            raise ValueError("mapping: this network is unconditional (c_dim 0, trained without --cond); "
                             "pass no class label c")
        for layer in self.layers:
            x = layer(x)
        if update_emas and self.w_avg_beta is not None:
            batch_mean = x.data.mean(axis=0)
            self.w_avg.data = batch_mean + (self.w_avg.data - batch_mean) * self.w_avg_beta
        if self.num_ws is None:
            return x
        ws = x.reshape(x.shape[0], 1, self.w_dim).broadcast_to((x.shape[0], self.num_ws, self.w_dim))
        if truncation_psi != 1:
            w_avg = Tensor(self.w_avg.data)
            cutoff = self.num_ws if truncation_cutoff is None else int(truncation_cutoff)
            truncated = w_avg + (ws[:, :cutoff] - w_avg) * float(truncation_psi)
            ws = truncated if cutoff >= self.num_ws else concat([truncated, ws[:, cutoff:]], axis=1)
        return ws


class SynthesisLayer(Module):
    """Modulated 3x3 convolution (optionally upsampling x2) + noise + bias + lrelu."""

    def __init__(self, in_channels, out_channels, w_dim, resolution, kernel_size=3, up=1, use_noise=True,
                 rng=None, dtype=np.float32):
        super().__init__()
        self.resolution, self.up, self.padding, self.use_noise = resolution, up, kernel_size // 2, use_noise
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1, rng=rng, dtype=dtype)
        self.weight = Parameter(rng.standard_normal((out_channels, in_channels, kernel_size, kernel_size)).astype(dtype))
        if use_noise:   # two blocks, so parameter order and random draws stay those of the reference
            self.noise_strength = Parameter(np.zeros((), dtype=dtype))
        self.bias = Parameter(np.zeros(out_channels, dtype=dtype))
        if use_noise:
            self.register_buffer("noise_const", rng.standard_normal((resolution, resolution)).astype(dtype))
        self.resample_filter = setup_filter(RESAMPLE_FILTER, dtype=dtype)

    def forward(self, x, w, noise_mode="random", rng=None):
        styles = self.affine(w)
        x = modulated_conv2d(x, self.weight, styles, up=self.up, padding=self.padding,
                             resample_filter=self.resample_filter)
        N = x.shape[0]
        if not self.use_noise:
            noise = None
        elif noise_mode == "random":
            rng = rng if rng is not None else np.random.default_rng()
            noise = rng.standard_normal((N, 1, self.resolution, self.resolution)).astype(x.dtype)
            noise = Tensor(backend.get_array_module(x.data).asarray(noise))
        elif noise_mode == "const":   # Tensor ops, so a projector can optimise noise_const
            noise = self.noise_const.reshape(1, 1, self.resolution, self.resolution) \
                .broadcast_to((N, 1, self.resolution, self.resolution))
        else:
            noise = None
        if noise is not None:
            x = noise_injection(x, noise, self.noise_strength)
        return bias_act(x, self.bias, act="lrelu")


class ToRGBLayer(Module):
    def __init__(self, in_channels, out_channels, w_dim, kernel_size=1, rng=None, dtype=np.float32):
        super().__init__()
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1, rng=rng, dtype=dtype)
        self.weight = Parameter(rng.standard_normal((out_channels, in_channels, kernel_size, kernel_size)).astype(dtype))
        self.bias = Parameter(np.zeros(out_channels, dtype=dtype))
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size * kernel_size)

    def forward(self, x, w):
        styles = self.affine(w) * self.weight_gain
        x = modulated_conv2d(x, self.weight, styles, demodulate=False)
        return bias_act(x, self.bias)


class SynthesisBlock(Module):
    def __init__(self, in_channels, out_channels, w_dim, resolution, img_channels, use_noise=True, rng=None,
                 dtype=np.float32):
        super().__init__()
        self.in_channels, self.resolution = in_channels, resolution
        self.num_conv, self.num_torgb = 0, 1
        if in_channels == 0:
            self.const = Parameter(rng.standard_normal((out_channels, resolution, resolution)).astype(dtype))
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim, resolution, up=2, use_noise=use_noise,
                                        rng=rng, dtype=dtype)
            self.num_conv += 1
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim, resolution, use_noise=use_noise,
                                    rng=rng, dtype=dtype)
        self.num_conv += 1
        self.torgb = ToRGBLayer(out_channels, img_channels, w_dim, rng=rng, dtype=dtype)
        self.resample_filter = setup_filter(RESAMPLE_FILTER, dtype=dtype)

    def forward(self, x, img, ws, noise_mode="random", rng=None):
        index = 0
        if self.in_channels == 0:
            N = ws.shape[0]
            x = self.const.reshape((1,) + self.const.shape).broadcast_to((N,) + self.const.shape)
        else:
            x = self.conv0(x, ws[:, index], noise_mode=noise_mode, rng=rng)
            index += 1
        x = self.conv1(x, ws[:, index], noise_mode=noise_mode, rng=rng)
        index += 1
        if img is not None:
            img = upsample2d(img, self.resample_filter)
        y = self.torgb(x, ws[:, index])
        img = y if img is None else img + y
        return x, img


def _block_resolutions_up(img_resolution):
    return [2 ** i for i in range(2, int(math.log2(img_resolution)) + 1)]


class SynthesisNetwork(Module):
    """ws -> image: `blocks[k]` works at 4 * 2**k pixels (a learned constant at 4x4, then an
    upsampling modulated convolution and a plain one per resolution, each taking one w), and each
    block's toRGB adds its image into the upsampled sum ('skip' architecture).

    forward(ws, noise_mode="random", rng=None): ws float Tensor [N, num_ws, w_dim] -> images Tensor
    [N, img_channels, img_resolution, img_resolution], nominally in [-1, 1] (not clipped). With
    noise inputs (use_noise), noise_mode "random" draws the per-pixel noise from `rng`, "const"
    uses each layer's fixed `noise_const` buffer (through the graph, so it can be optimised: the
    projector does), "none" leaves it out.
    """

    def __init__(self, w_dim, img_resolution, img_channels, channel_base=32768, channel_max=512, use_noise=True,
                 rng=None, dtype=np.float32):
        super().__init__()
        self.w_dim, self.img_resolution, self.img_channels = w_dim, img_resolution, img_channels
        resolutions = _block_resolutions_up(img_resolution)
        channels = {res: min(channel_base // res, channel_max) for res in resolutions}
        self.blocks = []
        self.num_ws = 0
        for res in resolutions:
            in_channels = channels[res // 2] if res > 4 else 0
            block = SynthesisBlock(in_channels, channels[res], w_dim, res, img_channels, use_noise=use_noise,
                                   rng=rng, dtype=dtype)
            self.blocks.append(block)
            self.num_ws += block.num_conv
        self.num_ws += self.blocks[-1].num_torgb

    def forward(self, ws, noise_mode="random", rng=None):
        if ws.ndim != 3 or ws.shape[1:] != (self.num_ws, self.w_dim):
            raise ValueError(f"synthesis: ws must be [N, {self.num_ws}, {self.w_dim}], got {tuple(ws.shape)}")
        if noise_mode not in ("random", "const", "none"):
            raise ValueError(f"synthesis: noise_mode must be 'random', 'const' or 'none', got {noise_mode!r}")
        x = img = None
        index = 0
        for block in self.blocks:
            block_ws = ws[:, index:index + block.num_conv + block.num_torgb]
            x, img = block(x, img, block_ws, noise_mode=noise_mode, rng=rng)
            index += block.num_conv
        return img


class Generator(Module):
    """StyleGAN2's generator: `mapping` (MappingNetwork, z -> ws) then `synthesis`
    (SynthesisNetwork, ws -> image). Channels per resolution: min(channel_base // res, channel_max);
    the presets are in `network_kwargs`. Parameters are drawn from default_rng(seed).

    forward(z, c=None, ...) -> images Tensor [N, img_channels, R, R] with a graph (training);
    generate(seeds | z) -> NumPy float32 in [-1, 1]; sample(seeds | z) -> NumPy uint8 (pictures).
    `c_dim` > 0 makes it conditional: each image then needs a class label c (an index or a
    one-hot row).
    State-dict names: "mapping.layers.0.weight", "mapping.w_avg",
    "synthesis.blocks.3.conv1.weight" (block k at 4 * 2**k px), ...; a checkpoint stores them
    under "G/", "G_ema/" (nanostyle.load reads them).
    """

    def __init__(self, z_dim, w_dim, img_resolution, img_channels=1, mapping_layers=8, channel_base=32768,
                 channel_max=512, mapping_lr_mul=0.01, w_avg_beta=0.995, use_noise=True, c_dim=0, seed=0,
                 dtype=np.float32):
        super().__init__()
        _check_resolution(img_resolution)
        rng = _rng(seed)
        self.z_dim, self.w_dim, self.c_dim = z_dim, w_dim, c_dim
        self.img_resolution, self.img_channels = img_resolution, img_channels
        self.synthesis = SynthesisNetwork(w_dim, img_resolution, img_channels, channel_base, channel_max,
                                          use_noise=use_noise, rng=rng, dtype=dtype)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(z_dim, w_dim, self.num_ws, num_layers=mapping_layers,
                                      lr_multiplier=mapping_lr_mul, w_avg_beta=w_avg_beta, c_dim=c_dim,
                                      rng=rng, dtype=dtype)

    def forward(self, z, c=None, truncation_psi=1.0, truncation_cutoff=None, noise_mode="random", rng=None,
                update_emas=False):
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff,
                          update_emas=update_emas)
        return self.synthesis(ws, noise_mode=noise_mode, rng=rng)

    def generate(self, seeds=None, z=None, c=None, truncation_psi=1.0, noise_mode="const", batch=16):
        """Images [N, C, R, R] as NumPy floats in [-1, 1], with no graph, for integer `seeds` (z drawn
        from default_rng(seed)) or given latents `z` [N, z_dim], `batch` at a time; a conditional
        generator also takes labels `c` (one class index for all, N indices, or one-hot [N, c_dim]).
        The output is clipped to the data range, as every picture of it is (PNG) and as the
        reference's metrics see it (uint8): the metrics judge what a user gets. With
        noise_mode="random" each batch draws its noise from default_rng(12345 + its first row), so
        those images depend on `batch` and on a seed's place in `seeds`."""
        if (seeds is None) == (z is None):
            raise ValueError("pass seeds (e.g. seeds=range(8)) or z (float [N, z_dim]), one of the two")
        if seeds is not None and isinstance(seeds, (int, np.integer)):
            raise ValueError(f"seeds must be a sequence of ints, got the int {seeds}; "
                             f"use seeds=[{seeds}] for that seed or seeds=range({seeds}) for {seeds} images")
        if z is None:
            z = np.stack([np.random.default_rng(int(s)).standard_normal(self.z_dim) for s in seeds]).astype(np.float32)
        out = []
        with no_grad():
            for start, chunk, chunk_c in self._batches(z, c, batch):
                rng = np.random.default_rng(12345 + start)
                images = self(chunk, c=chunk_c, truncation_psi=truncation_psi, noise_mode=noise_mode, rng=rng)
                out.append(backend.to_numpy(images.data))
        return np.clip(np.concatenate(out), -1.0, 1.0)

    def map(self, z, c=None, truncation_psi=1.0, batch=1000):
        """w [N, w_dim] as NumPy float64, with no graph: the mapping network's output for latents
        `z` [N, z_dim] (and labels `c`, as in `generate`), `batch` at a time. Without style mixing
        every layer of the synthesis network takes this w."""
        out = []
        with no_grad():
            for _, chunk, chunk_c in self._batches(z, c, batch):
                ws = self.mapping(chunk, chunk_c, truncation_psi=truncation_psi)
                out.append(backend.to_numpy(ws.data[:, 0]).astype(np.float64))
        return np.concatenate(out)

    def _batches(self, z, c, batch):
        """(first row, z Tensor, one-hot c Tensor or None) on the generator's device and dtype,
        `batch` rows at a time."""
        labels = self.one_hot(c, len(z))
        xp, dtype = self.mapping.w_avg.xp, self.mapping.w_avg.dtype
        for start in range(0, len(z), batch):
            chunk = Tensor(xp.asarray(z[start:start + batch], dtype=dtype))
            chunk_c = None if labels is None else Tensor(xp.asarray(labels[start:start + batch], dtype=dtype))
            yield start, chunk, chunk_c

    def one_hot(self, c, count):
        """Labels `c` for `count` images as float32 one-hot rows [count, c_dim]; None for an
        unconditional generator given none. `c`: one class index, `count` indices, or one-hot rows."""
        return one_hot(c, self.c_dim, count)

    def sample(self, seeds=None, z=None, c=None, truncation_psi=1.0, noise_mode="const", batch=16):
        """Images as NumPy uint8 [N, img_channels, R, R]: `generate`'s, rounded from [-1, 1] to
        0..255, so exactly the pixels examples/sample.py writes for the same seeds.

        seeds: ints (e.g. range(8)), z drawn from default_rng(seed) as in `generate`; or z: float
        [N, z_dim]. c: class labels of a conditional generator (c_dim > 0), passed on to
        `generate`. truncation_psi: w pulled towards w_avg (1 = none, 0.7 = typical trade of
        variety for fidelity). noise_mode: "const" (a seed gives the same image every time),
        "random" or "none". batch: images per forward pass (memory only, except with random noise:
        see `generate`)."""
        from .data import to_uint8
        return to_uint8(self.generate(seeds=seeds, z=z, c=c, truncation_psi=truncation_psi, noise_mode=noise_mode,
                                      batch=batch))


class Conv2dLayer(Module):
    """Equalised-lr convolution (optionally downsampling x2) + bias + activation."""

    def __init__(self, in_channels, out_channels, kernel_size, bias=True, activation="linear", down=1,
                 rng=None, dtype=np.float32):
        super().__init__()
        self.activation, self.down, self.padding = activation, down, kernel_size // 2
        self.weight = Parameter(rng.standard_normal((out_channels, in_channels, kernel_size, kernel_size)).astype(dtype))
        self.bias = Parameter(np.zeros(out_channels, dtype=dtype)) if bias else None
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size * kernel_size)
        self.act_gain = ACTIVATIONS[activation][1]
        self.resample_filter = setup_filter(RESAMPLE_FILTER, dtype=dtype)

    def forward(self, x, gain=1.0):
        w = self.weight * self.weight_gain
        x = conv2d_resample(x, w, f=self.resample_filter, down=self.down, padding=self.padding)
        return bias_act(x, self.bias, act=self.activation, gain=self.act_gain * gain)


class DiscriminatorBlock(Module):
    def __init__(self, in_channels, tmp_channels, out_channels, img_channels, rng=None, dtype=np.float32):
        super().__init__()
        self.in_channels = in_channels
        if in_channels == 0:
            self.fromrgb = Conv2dLayer(img_channels, tmp_channels, 1, activation="lrelu", rng=rng, dtype=dtype)
        self.conv0 = Conv2dLayer(tmp_channels, tmp_channels, 3, activation="lrelu", rng=rng, dtype=dtype)
        self.conv1 = Conv2dLayer(tmp_channels, out_channels, 3, activation="lrelu", down=2, rng=rng, dtype=dtype)
        self.skip = Conv2dLayer(tmp_channels, out_channels, 1, bias=False, down=2, rng=rng, dtype=dtype)

    def forward(self, x, img):
        if self.in_channels == 0:
            x = self.fromrgb(img)
        y = self.skip(x, gain=math.sqrt(0.5))
        x = self.conv0(x)
        x = self.conv1(x, gain=math.sqrt(0.5))
        return y + x


class DiscriminatorEpilogue(Module):
    def __init__(self, in_channels, resolution, mbstd_group_size=4, mbstd_num_channels=1, cmap_dim=0, rng=None,
                 dtype=np.float32):
        super().__init__()
        self.mbstd_group_size, self.mbstd_num_channels = mbstd_group_size, mbstd_num_channels
        self.cmap_dim = cmap_dim
        self.conv = Conv2dLayer(in_channels + mbstd_num_channels, in_channels, 3, activation="lrelu", rng=rng, dtype=dtype)
        self.fc = FullyConnectedLayer(in_channels * resolution ** 2, in_channels, activation="lrelu", rng=rng, dtype=dtype)
        self.out = FullyConnectedLayer(in_channels, cmap_dim or 1, rng=rng, dtype=dtype)

    def forward(self, x, cmap=None):
        if self.mbstd_num_channels > 0:
            x = minibatch_std(x, group_size=self.mbstd_group_size, num_channels=self.mbstd_num_channels)
        x = self.conv(x)
        x = self.fc(x.reshape(x.shape[0], -1))
        x = self.out(x)
        if self.cmap_dim:          # projection onto the label's embedding
            x = (x * cmap).sum(axis=1, keepdims=True) * (1 / math.sqrt(self.cmap_dim))
        return x


class Discriminator(Module):
    """StyleGAN2's residual discriminator: `blocks[k]` halves the resolution from img_resolution
    down to 4x4 (fromRGB in the first), then the epilogue (minibatch stddev over groups of
    `mbstd_group_size`, a 3x3 convolution, two dense layers).

    forward(img): float Tensor [N, img_channels, img_resolution, img_resolution] in [-1, 1] ->
    logits Tensor [N, 1] (higher: judged real). N must be a multiple of the mbstd group (or
    smaller than it). State-dict names: "blocks.0.fromrgb.weight", "epilogue.fc.weight", ...
    `c_dim` > 0 makes it conditional: labels go through its own mapping network (`mapping_layers`
    layers, cmap_dim = the 4x4 width unless given) to the projection of the epilogue, and
    forward(img, c) takes one-hot labels c [N, c_dim].
    """

    def __init__(self, img_resolution, img_channels=1, channel_base=32768, channel_max=512, mbstd_group_size=4,
                 mbstd_num_channels=1, c_dim=0, cmap_dim=None, mapping_layers=8, seed=0, dtype=np.float32):
        super().__init__()
        _check_resolution(img_resolution)
        rng = _rng(seed)
        self.img_resolution, self.img_channels, self.c_dim = img_resolution, img_channels, c_dim
        resolutions = [2 ** i for i in range(int(math.log2(img_resolution)), 2, -1)]
        channels = {res: min(channel_base // res, channel_max) for res in resolutions + [4]}
        self.blocks = []
        for res in resolutions:
            in_channels = channels[res] if res < img_resolution else 0
            self.blocks.append(DiscriminatorBlock(in_channels, channels[res], channels[res // 2], img_channels,
                                                  rng=rng, dtype=dtype))
        cmap_dim = (cmap_dim or channels[4]) if c_dim else 0
        if c_dim:
            self.mapping = MappingNetwork(0, cmap_dim, None, num_layers=mapping_layers, w_avg_beta=None, c_dim=c_dim,
                                          rng=rng, dtype=dtype)
        self.epilogue = DiscriminatorEpilogue(channels[4], 4, mbstd_group_size, mbstd_num_channels, cmap_dim=cmap_dim,
                                              rng=rng, dtype=dtype)

    def forward(self, img, c=None):
        expected = (self.img_channels, self.img_resolution, self.img_resolution)
        if img.ndim != 4 or tuple(img.shape[1:]) != expected:
            raise ValueError(f"discriminator: images must be [N, {expected[0]}, {expected[1]}, {expected[2]}], "
                             f"got {tuple(img.shape)}")
        if not self.c_dim and c is not None:
            raise ValueError("discriminator: this network is unconditional (c_dim 0); pass no class label c")
        if self.c_dim and (c is None or c.shape[0] != img.shape[0]):
            raise ValueError(f"discriminator: this network is conditional on {self.c_dim} classes: pass one-hot "
                             f"labels c [{img.shape[0]}, {self.c_dim}], got {None if c is None else tuple(c.shape)}")
        x = None
        for block in self.blocks:
            x = block(x, img)
        return self.epilogue(x, self.mapping(None, c) if self.c_dim else None)


def one_hot(c, c_dim, count):
    """Class labels as float32 one-hot rows [count, c_dim]: `c` is one class index (for all
    `count` rows), `count` indices, or one-hot rows already. None for c_dim 0 and c None."""
    if c_dim == 0:
        if c is not None:
            raise ValueError("this generator is unconditional (trained without --cond): it takes no class label c")
        return None
    if c is None:
        raise ValueError(f"this generator is conditional on {c_dim} classes: pass c, a class index "
                         f"(0-{c_dim - 1}) or one-hot labels [N, {c_dim}]")
    c = np.asarray(backend.to_numpy(c))
    if c.ndim == 2:
        if c.shape != (count, c_dim):
            raise ValueError(f"one-hot labels c must be [{count}, {c_dim}], got {c.shape}")
        return c.astype(np.float32)
    if c.ndim > 1 or not np.issubdtype(c.dtype, np.integer):
        raise ValueError(f"class labels c must be integer indices or one-hot rows, got {c.dtype} {c.shape}")
    index = np.broadcast_to(c, (count,)) if c.ndim == 0 else c
    if index.shape != (count,):
        raise ValueError(f"{len(index)} class labels for {count} images")
    if index.size and (index.min() < 0 or index.max() >= c_dim):
        raise ValueError(f"class index {int(index.min() if index.min() < 0 else index.max())} is out of range: "
                         f"this generator has {c_dim} classes (0-{c_dim - 1})")
    return np.eye(c_dim, dtype=np.float32)[index]


def _check_resolution(res):
    if not isinstance(res, (int, np.integer)) or res < 4 or res > 1024 or res & (res - 1):
        raise ValueError(f"resolution must be a power of two between 4 and 1024, got {res!r}")


CONFIGS = ("auto", "bench64", "cpu", "tiny")


def network_kwargs(cfg, res):
    """(G_kwargs, D_kwargs) for a named configuration at resolution `res`.

    auto:    StyleGAN2-ADA's 'auto' spec: channel_base 16384 (32768 from 512 up), channel_max
             512, 2 mapping layers at every resolution, z = w = 512.
    bench64: the fixed speed yardstick of docs/design.md (res 64 only).
    cpu:     narrow widths for a useful hour on a 2-core CPU, and no per-pixel noise inputs
             (use_noise=False; StyleGAN3 dropped them too).
             A conditional D maps labels through 2 layers, not ADA's 8: eight random lrelu
             layers give different labels nearly parallel cmaps at the start, so D would tell
             the classes apart only late in a run this short.
             At 128 and 256 px it scales as 'auto' does: the same channel_base, so each octave
             above 16 px halves the width (32 at 64, 16 at 128, 8 at 256) and every such block
             costs about the same multiply-adds.
    tiny:    a few channels, for tests only (a conditional D: 2 mapping layers, as cpu).
    """
    _check_resolution(res)
    if cfg == "auto":
        channel_base = 32768 if res >= 512 else 16384
        G = dict(z_dim=512, w_dim=512, mapping_layers=2, channel_base=channel_base, channel_max=512)
        D = dict(channel_base=channel_base, channel_max=512, mbstd_group_size=4)
    elif cfg == "bench64":
        if res != 64:
            raise ValueError(f"cfg 'bench64' is defined at res 64 only, got res {res}")
        G = dict(z_dim=256, w_dim=256, mapping_layers=2, channel_base=4096, channel_max=256)
        D = dict(channel_base=4096, channel_max=256, mbstd_group_size=4)
    elif cfg == "cpu":
        # no per-pixel noise inputs: on smooth MRI slices G used them for salt-and-pepper speckle
        # that mimics fine-band energy instead of learning grey/white-matter structure
        # (docs/experiments.md, "The diversity floor, and the collapse it replaced")
        G = dict(z_dim=128, w_dim=128, mapping_layers=2, channel_base=2048, channel_max=128, use_noise=False)
        D = dict(channel_base=2048, channel_max=128, mbstd_group_size=4, mapping_layers=2)
    elif cfg == "tiny":
        G = dict(z_dim=16, w_dim=16, mapping_layers=2, channel_base=8 * res, channel_max=16)
        D = dict(channel_base=8 * res, channel_max=16, mbstd_group_size=2, mapping_layers=2)
    else:
        raise ValueError(f"unknown cfg {cfg!r}; choose one of {', '.join(CONFIGS)}")
    return G, D
