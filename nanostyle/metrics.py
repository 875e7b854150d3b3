"""Sample-quality and diversity metrics that need no downloaded weights (pure NumPy).

FID needs Inception weights, which cannot be fetched here, so a run is judged by:
- sliced_wasserstein: the Progressive GAN paper's SWD (Karras et al. 2018, appendix D):
  Laplacian pyramid (binomial [1,4,6,4,1]/16 filter) down to 16x16, 128 random 7x7 patches per
  image and level, each set's descriptors normalised per channel by its own mean and std, then
  the sliced Wasserstein distance over 512 random unit directions (sorted projections, mean
  absolute difference), averaged over 4 repeats; reported per level and averaged, x 1e3.
  Lower is better.
- precision_recall: improved precision and recall (Kynkaanniemi et al. 2019) with k = 3
  nearest-neighbour balls, in the feature space of `embed` (below). Precision: share of
  generated samples inside the real manifold; recall: share of reals inside the generated one.
- diversity: mean MS-SSIM (Wang et al. 2003) of random pairs of generated images against the
  same for real pairs. diversity_ratio = (1 - msssim_fake) / (1 - msssim_real): about 1 when the
  samples vary as much as the data, near 0 under mode collapse (every sample the same brain).
- memorisation: each sample's distance to its nearest training image against the same for
  held-out reals: a ratio well below 1 means the generator copies training images.

The feature space (`embed`), chosen because it needs no learned weights and is meaningful for
grayscale slices: the image at 16x16 and 8x8 (shape and intensity layout), plus gradient
magnitudes at 16x16 (edges: ventricles, cortex folds), each block standardised by the real
set's statistics and weighted equally, then projected by PCA (fit on the reals) to at most 64
dimensions. Images are expected as floats in [-1, 1], shape [N, 1, H, W] (H = W >= 16).
"""
import numpy as np

_BINOMIAL = np.array([1, 4, 6, 4, 1], dtype=np.float64) / 16
_MS_SSIM_WEIGHTS = np.array([0.0448, 0.2856, 0.3001, 0.2363, 0.1333])


def _check(name, *sets):
    for images in sets:
        images = np.asarray(images)
        if images.ndim != 4:
            raise ValueError(f"{name}: images must be [N, C, H, W], got shape {images.shape}")
        if not np.all(np.isfinite(images)):
            raise ValueError(f"{name}: images contain NaN or Inf")
    shapes = {tuple(np.shape(s)[1:]) for s in sets}
    if len(shapes) > 1:
        raise ValueError(f"{name}: image sets differ in shape: {sorted(shapes)}")
    return [np.asarray(s, dtype=np.float64) for s in sets]


# ---- filtering helpers -----------------------------------------------------------------------

def _blur_rows(x, kernel):
    pad = len(kernel) // 2
    padded = np.pad(x, [(0, 0)] * (x.ndim - 1) + [(pad, pad)], mode="reflect")
    out = np.zeros_like(x)
    for i, k in enumerate(kernel):
        out += k * padded[..., i:i + x.shape[-1]]
    return out


def _blur(x, kernel=_BINOMIAL):
    """Separable blur over the last two axes (reflect padding)."""
    x = _blur_rows(x, kernel)
    return np.swapaxes(_blur_rows(np.swapaxes(x, -1, -2), kernel), -1, -2)


def _downsample(x):
    return _blur(x)[..., ::2, ::2]


def _upsample(x):
    up = np.zeros(x.shape[:-2] + (x.shape[-2] * 2, x.shape[-1] * 2))
    up[..., ::2, ::2] = x
    return _blur(up) * 4


def _area_resize(x, size):
    """Average-pool [N, C, H, W] to size x size (H a multiple of size, else nearest crop)."""
    N, C, H, W = x.shape
    fy, fx = max(H // size, 1), max(W // size, 1)
    x = x[:, :, :fy * size, :fx * size]
    return x.reshape(N, C, size, fy, size, fx).mean(axis=(3, 5))


# ---- sliced Wasserstein distance -------------------------------------------------------------

def laplacian_pyramid(images, min_size=16):
    levels, current = [], images
    while current.shape[-1] > min_size:
        smaller = _downsample(current)
        levels.append(current - _upsample(smaller))
        current = smaller
    levels.append(current)
    return levels


def _patches(level, count, size, rng):
    N, C, H, W = level.shape
    ys = rng.integers(0, H - size + 1, (N, count))
    xs = rng.integers(0, W - size + 1, (N, count))
    offsets = np.arange(size)
    rows = ys[:, :, None, None] + offsets[None, None, :, None]
    cols = xs[:, :, None, None] + offsets[None, None, None, :]
    n = np.arange(N)[:, None, None, None]
    patches = level.transpose(0, 2, 3, 1)[n, rows, cols]          # [N, count, size, size, C]
    return patches.reshape(N * count, size * size * C)


def _normalise(descriptors):
    # one channel: ProGAN normalises by the per-channel mean and std over all descriptors
    return (descriptors - descriptors.mean()) / (descriptors.std() + 1e-12)


def _swd(a, b, num_projections, num_repeats, rng):
    results = []
    for _ in range(num_repeats):
        directions = rng.standard_normal((a.shape[1], num_projections))
        directions /= np.sqrt((directions ** 2).sum(axis=0, keepdims=True))
        pa, pb = np.sort(a @ directions, axis=0), np.sort(b @ directions, axis=0)
        results.append(np.abs(pa - pb).mean())
    return float(np.mean(results))


def sliced_wasserstein(real, fake, patches_per_image=128, patch_size=7, num_projections=512, num_repeats=4, seed=0):
    real, fake = _check("sliced_wasserstein", real, fake)
    rng = np.random.default_rng(seed)
    n = min(len(real), len(fake))
    out = {}
    for level_real, level_fake in zip(laplacian_pyramid(real[:n]), laplacian_pyramid(fake[:n])):
        size = level_real.shape[-1]
        a = _normalise(_patches(level_real, patches_per_image, patch_size, rng))
        b = _normalise(_patches(level_fake, patches_per_image, patch_size, rng))
        out[f"swd_{size}"] = 1e3 * _swd(a, b, num_projections, num_repeats, rng)
    out["swd_avg"] = float(np.mean(list(out.values())))
    return out


# ---- feature space, precision and recall -----------------------------------------------------

class Embedding:
    """Weight-free features for grayscale slices (see the module docstring); fit on reals."""

    def __init__(self, reals, dims=64):
        blocks = self._blocks(reals)
        self.stats = [(b.mean(axis=0), b.std() + 1e-8) for b in blocks]
        features = self._standardise(blocks)
        self.mean = features.mean(axis=0)
        _, _, vt = np.linalg.svd(features - self.mean, full_matrices=False)
        self.components = vt[:min(dims, vt.shape[0])].T

    @staticmethod
    def _blocks(images):
        images = np.asarray(images, dtype=np.float64)
        small = _area_resize(images, 16)
        tiny = _area_resize(images, 8)
        gy, gx = np.gradient(small, axis=(2, 3))
        edges = np.sqrt(gx ** 2 + gy ** 2)
        return [b.reshape(len(images), -1) for b in (small, tiny, edges)]

    def _standardise(self, blocks):
        return np.concatenate([(b - m) / s / np.sqrt(b.shape[1]) for b, (m, s) in zip(blocks, self.stats)], axis=1)

    def __call__(self, images):
        return (self._standardise(self._blocks(images)) - self.mean) @ self.components


def embed(images, reference=None, dims=64):
    """Features of `images` in the space fit on `reference` (default: the images themselves)."""
    return Embedding(images if reference is None else reference, dims)(images)


def _pairwise_sq(a, b, chunk=1024):
    out = np.empty((len(a), len(b)))
    bb = (b ** 2).sum(axis=1)
    for start in range(0, len(a), chunk):
        part = a[start:start + chunk]
        out[start:start + chunk] = np.maximum((part ** 2).sum(axis=1)[:, None] + bb[None, :] - 2 * part @ b.T, 0)
    return out


def _knn_radii(features, k):
    d = _pairwise_sq(features, features)
    np.fill_diagonal(d, np.inf)
    return np.sort(d, axis=1)[:, k - 1]


def _coverage(manifold, radii, queries):
    """Share of queries inside at least one ball of the manifold."""
    d = _pairwise_sq(queries, manifold)
    return float((d <= radii[None, :]).any(axis=1).mean())


def precision_recall(real, fake, k=3, seed=0, embedding=None):
    real, fake = _check("precision_recall", real, fake)
    if len(real) <= k or len(fake) <= k:
        raise ValueError(f"precision_recall: need more than k={k} images per set, got {len(real)} and {len(fake)}")
    embedding = embedding or Embedding(real)
    fr, ff = embedding(real), embedding(fake)
    precision = _coverage(fr, _knn_radii(fr, k), ff)
    recall = _coverage(ff, _knn_radii(ff, k), fr)
    return {"precision": precision, "recall": recall}


# ---- MS-SSIM diversity ---------------------------------------------------------------------

def _gaussian_window(size=11, sigma=1.5):
    x = np.arange(size) - size // 2
    g = np.exp(-x ** 2 / (2 * sigma ** 2))
    return g / g.sum()


def _filter_valid(x, window):
    n = len(window)
    out_h, out_w = x.shape[-2] - n + 1, x.shape[-1] - n + 1
    rows = sum(window[i] * x[..., i:i + out_h, :] for i in range(n))
    return sum(window[i] * rows[..., :, i:i + out_w] for i in range(n))


def _ssim_components(a, b, data_range=2.0):
    window = _gaussian_window(min(11, a.shape[-1]))
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_a, mu_b = _filter_valid(a, window), _filter_valid(b, window)
    saa = _filter_valid(a * a, window) - mu_a ** 2
    sbb = _filter_valid(b * b, window) - mu_b ** 2
    sab = _filter_valid(a * b, window) - mu_a * mu_b
    cs = (2 * sab + c2) / (saa + sbb + c2)
    luminance = (2 * mu_a * mu_b + c1) / (mu_a ** 2 + mu_b ** 2 + c1)
    return (luminance * cs).mean(axis=(-1, -2, -3)), cs.mean(axis=(-1, -2, -3))


def ms_ssim(a, b):
    """Per-pair MS-SSIM of image sets a, b [N, C, H, W] in [-1, 1]. Scales: as many as keep the
    smallest image at least 11 pixels (3 at 64x64, max 5), standard weights renormalised."""
    a, b = _check("ms_ssim", a, b)
    scales = 1
    while scales < 5 and a.shape[-1] // (2 ** scales) >= 11:
        scales += 1
    weights = _MS_SSIM_WEIGHTS[:scales] / _MS_SSIM_WEIGHTS[:scales].sum()
    result = np.ones(len(a))
    for s in range(scales):
        ssim, cs = _ssim_components(a, b)
        value = ssim if s == scales - 1 else cs
        result *= np.maximum(value, 0) ** weights[s]
        if s < scales - 1:
            a, b = _area_resize(a, a.shape[-1] // 2), _area_resize(b, b.shape[-1] // 2)
    return result


def _random_pairs(n, count, rng):
    i = rng.integers(0, n, count)
    j = (i + rng.integers(1, n, count)) % n  # never the same image
    return i, j


def diversity(fake, real, num_pairs=500, seed=0):
    fake, real = _check("diversity", fake, real)
    if len(fake) < 2 or len(real) < 2:
        raise ValueError("diversity: need at least two images per set")
    rng = np.random.default_rng(seed)
    i, j = _random_pairs(len(fake), num_pairs, rng)
    ms_fake = float(ms_ssim(fake[i], fake[j]).mean())
    i, j = _random_pairs(len(real), num_pairs, rng)
    ms_real = float(ms_ssim(real[i], real[j]).mean())
    return {"ms_ssim_fake": ms_fake, "ms_ssim_real": ms_real,
            "diversity_ratio": (1 - ms_fake) / max(1 - ms_real, 1e-8)}


# ---- memorisation ----------------------------------------------------------------------------

def memorisation(fake, train, heldout, embedding=None):
    fake, train, heldout = _check("memorisation", fake, train, heldout)
    embedding = embedding or Embedding(train)
    ft, ff, fh = embedding(train), embedding(fake), embedding(heldout)
    nn_fake = np.sqrt(_pairwise_sq(ff, ft).min(axis=1))
    nn_held = np.sqrt(_pairwise_sq(fh, ft).min(axis=1))
    flat = lambda x: x.reshape(len(x), -1)
    pix_fake = np.sqrt(_pairwise_sq(flat(fake), flat(train)).min(axis=1) / flat(fake).shape[1])
    pix_held = np.sqrt(_pairwise_sq(flat(heldout), flat(train)).min(axis=1) / flat(fake).shape[1])
    return {"nn_dist_fake": float(np.median(nn_fake)), "nn_dist_heldout": float(np.median(nn_held)),
            "memorisation_ratio": float(np.median(nn_fake) / max(np.median(nn_held), 1e-12)),
            "nn_pixel_rms_fake": float(np.median(pix_fake)), "nn_pixel_rms_heldout": float(np.median(pix_held))}


def evaluate(real, fake, train=None, heldout=None, seed=0):
    """All metrics that apply, as a flat dict of floats."""
    real, fake = _check("evaluate", real, fake)
    results = {}
    results.update(sliced_wasserstein(real, fake, seed=seed))
    embedding = Embedding(real)
    results.update(precision_recall(real, fake, seed=seed, embedding=embedding))
    results.update(diversity(fake, real, seed=seed))
    if train is not None and heldout is not None:
        results.update(memorisation(fake, train, heldout))
    return results


def format_table(results):
    width = max(len(k) for k in results)
    lines = [f"{'metric'.ljust(width)}  value", f"{'-' * width}  -----"]
    for key, value in results.items():
        lines.append(f"{key.ljust(width)}  {value:.4f}" if isinstance(value, float) else f"{key.ljust(width)}  {value}")
    return "\n".join(lines)
