"""The bench64 training step as StyleGAN2-ADA's PyTorch code computes it on a CPU, for timing.

    python benchmarks/reference_torch.py [--iters 5] [--json FILE] [--threads 2] [--flops] [--isa avx2]

Why: issue 7's reference figures were measured on another machine. This re-implements the
same work in plain PyTorch from the architecture facts (nanostyle/networks.py is the spec: same
shapes and parameter counts; given nanostyle's weights, with the up-conv kernels flipped, the
same outputs), so "the reference" can be timed here next to
`python benchmarks/train_step.py --config bench64` and the two compared as a ratio.

It does what StyleGAN2-ADA's code does on a CPU, where its custom CUDA ops fall back to their
plain-PyTorch paths (--flops: FLOPs per phase as issue 7's):
  * modulated convs in training mode are not fused: x * styles, a shared-weight conv, times the
    demodulation coefficients (from the [N, O, I, 3, 3] modulated weights: half the G step),
    plus noise (addcmul); the fused form (per-sample weights, a grouped conv with groups = N),
    which an eval-mode G (G_ema) runs, is timed as g_forward_fused_s;
  * upsampling: stride-2 transposed conv, then the [1,3,3,1] FIR (4x4) as a depthwise conv2d,
    gain 4; the toRGB skip images zero-inserted, padded and filtered so; downsampling: the FIR at
    full resolution, then a stride-2 3x3 conv, or a [::2, ::2] slice and the 1x1 skip conv;
  * bias_act as plain ops; R1 via autograd.grad(create_graph=True), loss (logits * 0 + r1 *
    gamma / 2).mean() * 16; D main as two backward passes; grads nan_to_num'd before each Adam.
--isa avx2 holds torch's kernels (ATen's vector code, oneDNN, MKL) to AVX2 on a CPU with AVX-512,
as on the issue's Zen 3 machine kind; nanostyle's counterpart is OpenBLAS's Haswell kernels
(`OPENBLAS_CORETYPE=Haswell`). The JSON records the instruction set torch reports using.
Differences: weights drawn from torch's generator; float32 with no conv_clamp (its --fp32); one
process; no augmentation, style mixing, path-length reg, G_ema update or statistics.
"""
import argparse
import json
import math
import os
import resource
import statistics
import sys
import time

# The settings that hold torch's libraries to one instruction set; each library reads its own
# when it loads, so --isa is looked at before `import torch`.
ISA_ENVIRONMENT = {
    "native": {},
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"},
}
if __name__ == "__main__":
    _early = argparse.ArgumentParser(add_help=False)
    _early.add_argument("--isa", choices=sorted(ISA_ENVIRONMENT), default="native")
    os.environ.update(ISA_ENVIRONMENT[_early.parse_known_args()[0].isa])

try:
    import torch
    import torch.nn.functional as F
    from torch import nn
except ImportError:
    print("reference_torch.py needs PyTorch, which nanostyle does not depend on: pip install torch==2.13.0",
          file=sys.stderr)
    sys.exit(2)

ISSUE_FLOPS = {"g_forward_s": 22.6e9, "G_main_s": 114.8e9, "D_main_s": 163.1e9, "D_r1_s": 141.0e9}


def fir_filter():
    f = torch.tensor([1.0, 3.0, 3.0, 1.0])
    return torch.outer(f, f) / 64


def upfirdn(x, f, up=1, down=1, pad=(0, 0), gain=1.0):
    """Insert up-1 zeros after each pixel, pad both axes by pad, filter each channel with f (a
    depthwise conv2d), keep every down-th pixel."""
    N, C, H, W = x.shape
    if up > 1:
        x = F.pad(x.reshape(N, C, H, 1, W, 1), [0, up - 1, 0, 0, 0, up - 1]).reshape(N, C, H * up, W * up)
    x = F.pad(x, [pad[0], pad[1], pad[0], pad[1]])
    x = F.conv2d(x, (f * gain)[None, None].repeat(C, 1, 1, 1), groups=C)
    return x[:, :, ::down, ::down] if down > 1 else x


def conv_up2(x, w, f, groups=1):
    """3x3 conv (padding 1) at twice the resolution: transposed stride-2 conv, then the FIR."""
    w = w.unflatten(0, (groups, -1)).transpose(1, 2).flatten(0, 1)      # [G*O, I, k, k] -> [G*I, O, k, k]
    x = F.conv_transpose2d(x, w, stride=2, groups=groups)
    return upfirdn(x, f, pad=(1, 1), gain=4)


def conv_down2(x, w, f):
    """3x3 (padding 1) or 1x1 conv to half the resolution, the FIR first."""
    if w.shape[-1] == 1:
        return F.conv2d(upfirdn(x, f, down=2, pad=(1, 1)), w)
    return F.conv2d(upfirdn(x, f, pad=(2, 2)), w, stride=2)


def bias_act(x, b=None, lrelu=False, gain=1.0):
    if b is not None:
        x = x + b.reshape([1, -1] + [1] * (x.ndim - 2))
    if lrelu:
        x, gain = F.leaky_relu(x, 0.2), gain * math.sqrt(2)
    return x * gain if gain != 1 else x


def modulated_conv(x, weight, styles, f=None, up=False, demodulate=True, noise=None, fused=False):
    N, k = x.shape[0], weight.shape[-1]
    if demodulate or fused:
        w = weight[None] * styles[:, None, :, None, None]                     # [N, O, I, k, k]
    d = (w.square().sum([2, 3, 4]) + 1e-8).rsqrt() if demodulate else None    # [N, O]
    if fused:    # per-sample weights, one grouped conv over the batch
        w = w * d[:, :, None, None, None] if demodulate else w
        x, w = x.flatten(0, 1)[None], w.flatten(0, 1)
        x = conv_up2(x, w, f, groups=N) if up else F.conv2d(x, w, padding=k // 2, groups=N)
        x = x.unflatten(1, (N, -1))[0]
        return x if noise is None else x + noise
    x = x * styles[:, :, None, None]
    x = conv_up2(x, weight, f) if up else F.conv2d(x, weight, padding=k // 2)
    if demodulate:
        return x * d[:, :, None, None] if noise is None else torch.addcmul(noise, x, d[:, :, None, None])
    return x if noise is None else x + noise


def minibatch_std(x, group=4):
    N, C, H, W = x.shape
    G = min(group, N)
    y = x.reshape(G, -1, 1, C, H, W)
    y = ((y - y.mean(0)).square().mean(0) + 1e-8).sqrt().mean([2, 3, 4])      # [N/G, 1]
    return torch.cat([x, y.reshape(-1, 1, 1, 1).repeat(G, 1, H, W)], dim=1)


class FC(nn.Module):
    def __init__(self, cin, cout, lrelu=False, lr_mul=1.0, bias_init=0.0):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin) / lr_mul)
        self.bias = nn.Parameter(torch.full([cout], float(bias_init)))
        self.lrelu, self.lr_mul, self.weight_gain = lrelu, lr_mul, lr_mul / math.sqrt(cin)

    def forward(self, x):
        w, b = self.weight * self.weight_gain, self.bias * self.lr_mul if self.lr_mul != 1 else self.bias
        if not self.lrelu:
            return torch.addmm(b[None], x, w.t())
        return bias_act(x.matmul(w.t()), b, lrelu=True)


class SynthesisLayer(nn.Module):
    def __init__(self, cin, cout, w_dim, res, up=False):
        super().__init__()
        self.affine = FC(w_dim, cin, bias_init=1)
        self.weight = nn.Parameter(torch.randn(cout, cin, 3, 3))
        self.noise_strength = nn.Parameter(torch.zeros([]))
        self.bias = nn.Parameter(torch.zeros(cout))
        self.register_buffer("f", fir_filter())
        self.res, self.up = res, up

    def forward(self, x, w, fused):
        noise = torch.randn(x.shape[0], 1, self.res, self.res) * self.noise_strength
        x = modulated_conv(x, self.weight, self.affine(w), self.f, self.up, noise=noise, fused=fused)
        return bias_act(x, self.bias, lrelu=True)


class ToRGB(nn.Module):
    def __init__(self, cin, cout, w_dim):
        super().__init__()
        self.affine = FC(w_dim, cin, bias_init=1)
        self.weight = nn.Parameter(torch.randn(cout, cin, 1, 1))
        self.bias = nn.Parameter(torch.zeros(cout))
        self.gain = 1 / math.sqrt(cin)

    def forward(self, x, w, fused):
        styles = self.affine(w) * self.gain
        return bias_act(modulated_conv(x, self.weight, styles, demodulate=False, fused=fused), self.bias)


class SynthesisBlock(nn.Module):
    def __init__(self, cin, cout, w_dim, res, img_channels):
        super().__init__()
        if cin == 0:
            self.const = nn.Parameter(torch.randn(cout, res, res))
        else:
            self.conv0 = SynthesisLayer(cin, cout, w_dim, res, up=True)
        self.conv1 = SynthesisLayer(cout, cout, w_dim, res)
        self.torgb = ToRGB(cout, img_channels, w_dim)
        self.register_buffer("f", fir_filter())
        self.num_conv = 1 if cin == 0 else 2

    def forward(self, x, img, ws):
        fused = not self.training           # the reference's default: fused only in eval mode
        if x is None:
            x = self.const[None].repeat(ws.shape[0], 1, 1, 1)
        else:
            x = self.conv0(x, ws[:, 0], fused)
        x = self.conv1(x, ws[:, self.num_conv - 1], fused)
        if img is not None:
            img = upfirdn(img, self.f, up=2, pad=(2, 1), gain=4)
        y = self.torgb(x, ws[:, self.num_conv], fused)
        return x, y if img is None else img.add_(y)


class Generator(nn.Module):
    def __init__(self, z_dim=256, w_dim=256, res=64, img_channels=1, mapping_layers=2, channel_base=4096,
                 channel_max=256):
        super().__init__()
        self.z_dim, self.w_avg_beta = z_dim, 0.995
        chans = {r: min(channel_base // r, channel_max) for r in [2 ** i for i in range(2, int(math.log2(res)) + 1)]}
        self.blocks = nn.ModuleList(SynthesisBlock(chans.get(r // 2, 0) if r > 4 else 0, c, w_dim, r, img_channels)
                                    for r, c in chans.items())
        self.num_ws = sum(b.num_conv for b in self.blocks) + 1
        dims = [z_dim] + [w_dim] * mapping_layers
        self.mapping = nn.ModuleList(FC(dims[i], dims[i + 1], lrelu=True, lr_mul=0.01) for i in range(mapping_layers))
        self.register_buffer("w_avg", torch.zeros(w_dim))

    def forward(self, z):
        x = z * (z.square().mean(1, keepdim=True) + 1e-8).rsqrt()
        for layer in self.mapping:
            x = layer(x)
        if self.training:
            self.w_avg.copy_(x.detach().mean(0).lerp(self.w_avg, self.w_avg_beta))
        ws = x[:, None].repeat(1, self.num_ws, 1)
        x = img = None
        index = 0
        for block in self.blocks:
            x, img = block(x, img, ws[:, index:index + block.num_conv + 1])
            index += block.num_conv
        return img


class Conv(nn.Module):
    """Equalised-lr conv (3x3 or 1x1, optionally halving the resolution) + bias + activation."""

    def __init__(self, cin, cout, k, lrelu=True, bias=True, down=False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin, k, k))
        self.bias = nn.Parameter(torch.zeros(cout)) if bias else None
        self.register_buffer("f", fir_filter())
        self.lrelu, self.down, self.weight_gain = lrelu, down, 1 / math.sqrt(cin * k * k)

    def forward(self, x, gain=1.0):
        w = self.weight * self.weight_gain
        x = conv_down2(x, w, self.f) if self.down else F.conv2d(x, w, padding=w.shape[-1] // 2)
        return bias_act(x, self.bias, self.lrelu, gain)


class DiscriminatorBlock(nn.Module):
    def __init__(self, cin, tmp, cout, img_channels):
        super().__init__()
        self.fromrgb = Conv(img_channels, tmp, 1) if cin == 0 else None
        self.conv0 = Conv(tmp, tmp, 3)
        self.conv1 = Conv(tmp, cout, 3, down=True)
        self.skip = Conv(tmp, cout, 1, lrelu=False, bias=False, down=True)

    def forward(self, x, img):
        if self.fromrgb is not None:
            x = self.fromrgb(img)
        y = self.skip(x, gain=math.sqrt(0.5))
        return y.add_(self.conv1(self.conv0(x), gain=math.sqrt(0.5)))


class Discriminator(nn.Module):
    def __init__(self, res=64, img_channels=1, channel_base=4096, channel_max=256):
        super().__init__()
        resolutions = [2 ** i for i in range(int(math.log2(res)), 2, -1)]
        ch = {r: min(channel_base // r, channel_max) for r in resolutions + [4]}
        self.blocks = nn.ModuleList(DiscriminatorBlock(ch[r] if r < res else 0, ch[r], ch[r // 2], img_channels)
                                    for r in resolutions)
        self.conv = Conv(ch[4] + 1, ch[4], 3)
        self.fc = FC(ch[4] * 16, ch[4], lrelu=True)
        self.out = FC(ch[4], 1)

    def forward(self, img):
        x = None
        for block in self.blocks:
            x = block(x, img)
        x = self.conv(minibatch_std(x))
        return self.out(self.fc(x.flatten(1)))


def adam_step(opt, module):
    for p in module.parameters():
        if p.grad is not None:
            torch.nan_to_num(p.grad, nan=0, posinf=1e5, neginf=-1e5, out=p.grad)
    opt.step()


def build_phases(batch=16, gamma=1.0, r1_interval=16):
    """The phases as the reference's loss and training loop run them: only the phase's module
    requires grad, grads set to None before and sanitised after, then its Adam step."""
    torch.manual_seed(0)
    G, D = Generator(), Discriminator()
    c = r1_interval / (r1_interval + 1)      # lazy regularisation's correction of D's Adam
    opt_G = torch.optim.Adam(G.parameters(), lr=0.0025, betas=(0.0, 0.99), eps=1e-8)
    opt_D = torch.optim.Adam(D.parameters(), lr=0.0025 * c, betas=(0.0, 0.99 ** c), eps=1e-8)
    real = torch.rand(batch, 1, 64, 64) * 2 - 1

    def train(module):
        G.requires_grad_(module is G)
        D.requires_grad_(module is D)
        (opt_G if module is G else opt_D).zero_grad(set_to_none=True)

    def g_main():
        train(G)
        F.softplus(-D(G(torch.randn(batch, G.z_dim)))).mean().backward()
        adam_step(opt_G, G)

    def d_main():
        train(D)
        F.softplus(D(G(torch.randn(batch, G.z_dim)))).mean().backward()
        logits = D(real.detach())
        (logits * 0 + F.softplus(-logits)).mean().backward()
        adam_step(opt_D, D)

    def d_r1():
        train(D)
        x = real.detach().requires_grad_(True)
        logits = D(x)
        (grad,) = torch.autograd.grad(logits.sum(), [x], create_graph=True, only_inputs=True)
        r1 = grad.square().sum([1, 2, 3]) * (gamma / 2)
        (logits * 0 + r1).mean().mul(r1_interval).backward()
        adam_step(opt_D, D)

    def g_forward(eval_mode=False):
        G.train(not eval_mode)
        with torch.no_grad():
            G(torch.randn(batch, G.z_dim))
        G.train()

    return G, D, {"G_main_s": g_main, "D_main_s": d_main, "D_r1_s": d_r1, "g_forward_s": g_forward,
                  "g_forward_fused_s": lambda: g_forward(eval_mode=True)}


def time_phases(phases, iters):
    results = {}
    for name, fn in phases.items():
        fn()    # warm-up
        times = []
        for _ in range(iters):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        results[name] = statistics.median(times)
    results["lazy_iter_s"] = results["G_main_s"] + results["D_main_s"] + results["D_r1_s"] / 16
    results["img_per_s"] = 16 / results["lazy_iter_s"]
    results["peak_memory_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return results


def count_flops(phases):
    """FLOPs of one pass of each phase, by FlopCounterMode's own formulas (its flop_registry); not
    FlopCounterMode itself, whose module tracker rejects autograd.grad() of a module's leaf input."""
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils.flop_counter import flop_registry

    class Counter(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if func.overloadpacket in flop_registry:
                self.total += flop_registry[func.overloadpacket](*args, **(kwargs or {}), out_val=out)
            return out

    flops = {}
    for name in ISSUE_FLOPS:
        with Counter() as counter:
            counter.total = 0
            phases[name]()
        flops[name] = counter.total
    return flops


def parameter_counts(G, D):
    """Parameters here and in nanostyle's bench64 networks (imported last, after the timing)."""
    sizes = {"G": sum(p.numel() for p in G.parameters()), "D": sum(p.numel() for p in D.parameters())}
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from nanostyle.train import build_networks
    ours = build_networks("bench64", 64)
    sizes.update(nanostyle_G=sum(p.data.size for p in ours[0].parameters()),
                 nanostyle_D=sum(p.data.size for p in ours[1].parameters()))
    return sizes


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--flops", action="store_true", help="also count FLOPs per phase (FlopCounterMode)")
    p.add_argument("--json", help="write the results here")
    p.add_argument("--isa", choices=sorted(ISA_ENVIRONMENT), default="native",
                   help="avx2: torch's kernels held to AVX2 (read before torch loads; see above)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    G, D, phases = build_phases()
    results = time_phases(phases, args.iters)
    results.update(torch_version=torch.__version__, threads=args.threads, iters=args.iters, isa=args.isa,
                   cpu_capability=torch.backends.cpu.get_cpu_capability(),
                   malloc_mmap_threshold=os.environ.get("MALLOC_MMAP_THRESHOLD_"),
                   malloc_trim_threshold=os.environ.get("MALLOC_TRIM_THRESHOLD_"))
    for key, value in results.items():
        print(f"{key:24} {value:.4f}" if isinstance(value, float) else f"{key:24} {value}")
    if args.flops:
        results["flops"] = count_flops(phases)
        print(f"{'FLOPs per batch of 16':24} {'here':>9} {'issue 7':>9}")
        for name, value in results["flops"].items():
            print(f"{name:24} {value / 1e9:8.1f}G {ISSUE_FLOPS[name] / 1e9:8.1f}G  "
                  f"({value / ISSUE_FLOPS[name] - 1:+.1%})")
    results["parameters"] = parameter_counts(G, D)
    print("parameters", "  ".join(f"{k}={v:,}" for k, v in results["parameters"].items()))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=1)


if __name__ == "__main__":
    main()
