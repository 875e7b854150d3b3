"""Sample-quality, diversity and memorisation metrics that need no downloaded weights.

Fréchet Inception Distance needs Inception weights, which cannot be fetched here, so a run is
judged with metrics computed from the pixels alone (pure NumPy, float64):

- `sliced_wasserstein`: the sliced Wasserstein distance between Laplacian-pyramid patch
  distributions of the Progressive GAN paper (Karras, Aila, Laine, Lehtinen, "Progressive Growing
  of GANs for Improved Quality, Stability, and Variation", ICLR 2018, appendix D, and its
  official metrics/sliced_wasserstein.py). Lower is better; x 1e3 as in the paper.
- `precision_recall`: improved precision and recall (Kynkaanniemi, Karras, Laine, Lehtinen, Aila,
  "Improved Precision and Recall Metric for Assessing Generative Models", NeurIPS 2019): the
  union of k-nearest-neighbour balls (k = 3) around each set's feature vectors approximates its
  manifold. Precision: share of generated samples inside the real manifold (quality); recall:
  share of reals inside the generated manifold (coverage). Higher is better.
- `ms_ssim` / `diversity`: multi-scale SSIM (Wang, Simoncelli, Bovik, "Multi-scale structural
  similarity for image quality assessment", Asilomar 2003) of random pairs within a set; as a
  diversity measure as in Odena, Olah, Shlens, "Conditional Image Synthesis with Auxiliary
  Classifier GANs", ICML 2017. Generated pairs are compared with real pairs:
  diversity_ratio = (1 - ms_ssim_fake) / (1 - ms_ssim_real) is about 1 when samples vary as much
  as the data and tends to 0 under mode collapse (every sample the same brain).
- `memorisation`: each sample's distance to its nearest training image, against the same for
  held-out reals; a ratio well below 1 means the generator copies training images.
- `evaluate` runs all that apply and returns a flat dict of floats; `format_table` prints it.

Images are float arrays [N, C, H, W] in [-1, 1] (C = 1 for the MRI slices; H, W >= 16). Every
random choice comes from a `seed`, so each function is deterministic given its inputs and seed.

The feature space (`Embedding`, `embed`), used by precision/recall and memorisation, needs no
learned weights and is built for grayscale slices, where what matters is where the tissue is,
how bright it is, and how sharp its fine structure is (cortex folds, ventricle borders):

  layout16  the image area-averaged to 16x16       (head outline, ventricles, grey/white layout)
  layout8   the image area-averaged to 8x8         (overall shape and brightness: a second vote
                                                    for the coarsest structure)
  bands     RMS of the three finest Laplacian-pyramid bands in a 4x4 grid of cells
            (sharpness and texture per region: blur empties these, noise floods them)
  edges     gradient-orientation histograms (6 unsigned bins) in a 4x4 grid of cells, at 32x32
            (which way the edges run, as in HOG: folds and boundaries)

Each block is centred on the reference set's per-feature mean and divided by the block's total
standard deviation on the reference set (one number per block, so the near-constant background
pixels are not inflated into noise, and each block carries the same weight whatever its length).
PCA fit on the reference set then keeps at most 64 components: the directions in which real
slices actually differ, which makes k-NN distances less noisy than in the raw 400-odd dimensions.
"""
import math

import numpy as np

__all__ = ["sliced_wasserstein", "laplacian_pyramid", "precision_recall", "precision_recall_tolerant",
           "nuisance_augment", "Embedding", "embed",
           "ms_ssim", "diversity", "mean_pair_distance", "memorisation", "evaluate", "format_table"]

_BINOMIAL_5 = np.array([1.0, 4.0, 6.0, 4.0, 1.0]) / 16.0      # ProGAN's pyramid filter, separable
_MS_SSIM_WEIGHTS = np.array([0.0448, 0.2856, 0.3001, 0.2363, 0.1333])  # Wang et al. 2003
_MIN_SIZE = 16
_ENERGY_FLOOR = 2.0 / 255                                      # one 8-bit grey level in [-1, 1] units


# ---- input checks --------------------------------------------------------------------------------

def _check_images(function, **named_sets):
    """Validate image sets; return them as float64 arrays. Errors name the function and the problem."""
    checked = []
    for name, images in named_sets.items():
        array = np.asarray(images)
        if array.ndim != 4:
            raise ValueError(f"{function}: {name} must be a 4-D array [N, C, H, W], got shape {array.shape}")
        if array.shape[0] == 0:
            raise ValueError(f"{function}: {name} is empty (shape {array.shape})")
        if min(array.shape[2:]) < _MIN_SIZE:
            raise ValueError(f"{function}: {name} images must be at least {_MIN_SIZE}x{_MIN_SIZE}, "
                             f"got {array.shape[2]}x{array.shape[3]}")
        if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
            raise ValueError(f"{function}: {name} must hold numbers, got dtype {array.dtype}")
        if np.issubdtype(array.dtype, np.integer) and array.size and (array.max() > 1 or array.min() < -1):
            # uint8 pixels would silently break the [-1, 1] data range MS-SSIM assumes
            raise ValueError(f"{function}: {name} holds integers up to {array.max()}; metrics expect floats "
                             f"in [-1, 1] (convert with nanostyle.data.to_float)")
        array = array.astype(np.float64, copy=False)
        bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
        if bad:
            raise ValueError(f"{function}: {name} contains NaN or Inf ({bad} values)")
        checked.append(array)
    shapes = {name: a.shape[1:] for name, a in zip(named_sets, checked)}
    if len(set(shapes.values())) > 1:
        described = ", ".join(f"{name} {tuple(shape)}" for name, shape in shapes.items())
        raise ValueError(f"{function}: image sets differ in shape [C, H, W]: {described}")
    return checked


# ---- filtering and resampling helpers ------------------------------------------------------------

def _filter_axis(x, taps, axis, mode):
    """Correlate x with 1-D `taps` along `axis`; mode 'reflect' keeps the size ('same'),
    mode 'valid' shrinks it by len(taps) - 1."""
    x = np.moveaxis(x, axis, -1)
    n = len(taps)
    if mode == "reflect":
        # numpy 'reflect' (d c b | a b c d | c b a) is scipy.ndimage 'mirror', ProGAN's choice
        x = np.pad(x, [(0, 0)] * (x.ndim - 1) + [(n // 2, n // 2)], mode="reflect")
    length = x.shape[-1] - n + 1
    out = taps[0] * x[..., :length]
    for i in range(1, n):
        out = out + taps[i] * x[..., i:i + length]
    return np.moveaxis(out, -1, axis)


def _filter2d(x, taps, mode="reflect"):
    """Separable 2-D filter over the last two axes."""
    return _filter_axis(_filter_axis(x, taps, -1, mode), taps, -2, mode)


def _pyr_down(x):
    """Binomial blur then keep every other pixel (matches cv2.pyrDown, as ProGAN's code)."""
    return _filter2d(x, _BINOMIAL_5)[..., ::2, ::2]


def _pyr_up(x, shape):
    """Zero-insert to twice the size, blur with 4x the 2-D filter (cv2.pyrUp: 2x per axis, making
    up for the three zeros inserted per pixel), crop to `shape`."""
    up = np.zeros(x.shape[:-2] + (2 * x.shape[-2], 2 * x.shape[-1]))
    up[..., ::2, ::2] = x
    return _filter2d(up, 2.0 * _BINOMIAL_5)[..., :shape[-2], :shape[-1]]


def laplacian_pyramid(images, min_size=_MIN_SIZE):
    """Laplacian pyramid of [N, C, H, W] images, finest band first; a level exists for every
    resolution H, H/2, ... that is at least `min_size` (ProGAN: 64 -> 64, 32, 16). The last
    level is the low-pass residual, the others are band-pass (image minus upsampled next level)."""
    levels = [np.asarray(images, dtype=np.float64)]
    while min(levels[-1].shape[-2:]) // 2 >= min_size:
        smaller = _pyr_down(levels[-1])
        levels[-1] = levels[-1] - _pyr_up(smaller, levels[-1].shape)
        levels.append(smaller)
    return levels


def _area_matrix(size_in, size_out):
    """[size_out, size_in] matrix averaging input pixels over each output cell (exact area
    weights, so any size maps to any smaller size, not only integer factors)."""
    edges = np.arange(size_out + 1) * (size_in / size_out)
    starts, stops = edges[:-1, None], edges[1:, None]
    pixel = np.arange(size_in)[None, :]
    overlap = np.clip(np.minimum(stops, pixel + 1) - np.maximum(starts, pixel), 0, None)
    return overlap / overlap.sum(axis=1, keepdims=True)


def _area_resize(x, size):
    """Area-average the last two axes of x to size x size."""
    rows, cols = _area_matrix(x.shape[-2], size), _area_matrix(x.shape[-1], size)
    return rows @ x @ cols.T


def _batches(count, batch):
    return [slice(start, min(start + batch, count)) for start in range(0, count, batch)]


def _child_rngs(seed, count):
    """Independent generators from one seed, so e.g. the real set's patch positions do not shift
    when the fake set changes."""
    return [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(count)]


# ---- sliced Wasserstein distance (ProGAN) --------------------------------------------------------

def _patch_descriptors(level, patches_per_image, patch_size, rng):
    """`patches_per_image` random patch_size^2 neighbourhoods per image: [N * count, C, p, p]."""
    N, C, H, W = level.shape
    ys = rng.integers(0, H - patch_size + 1, size=(N, patches_per_image))
    xs = rng.integers(0, W - patch_size + 1, size=(N, patches_per_image))
    offsets = np.arange(patch_size)
    rows = (ys[:, :, None] + offsets)[:, :, :, None]              # [N, count, p, 1]
    cols = (xs[:, :, None] + offsets)[:, :, None, :]              # [N, count, 1, p]
    image = np.arange(N)[:, None, None, None]
    patches = level.transpose(0, 2, 3, 1)[image, rows, cols]      # [N, count, p, p, C]
    return patches.transpose(0, 1, 4, 2, 3).reshape(N * patches_per_image, C, patch_size, patch_size)


def _normalise_descriptors(descriptors):
    """Per-channel zero mean, unit std over all descriptors of one set (ProGAN's
    finalize_descriptors), statistics in float64; flattened to float32 [M, C * p * p]."""
    mean = descriptors.mean(axis=(0, 2, 3), keepdims=True, dtype=np.float64)
    std = np.sqrt(((descriptors - mean) ** 2).mean(axis=(0, 2, 3), keepdims=True))
    return ((descriptors - mean) / (std + 1e-12)).astype(np.float32).reshape(len(descriptors), -1)


def _sorted_projections(descriptors_t, directions):
    """Projections of all descriptors ([D, M], transposed so each product row is contiguous) onto
    each direction ([D, P]): [P, M], each row sorted."""
    return np.sort(directions.T @ descriptors_t, axis=1)


def _sliced_distance(a, b, num_projections, num_repeats, rng):
    """Mean |sorted(a @ d) - sorted(b @ d)| over random unit directions d, averaged over repeats.

    The pyramid and the normalising statistics are float64; the stored descriptors, projections
    and sorts (nearly all the memory and work) are float32, as in the official code: half the
    memory, several times faster products and SIMD sorts, and rounding unit-scale values to 2^-24
    moves the distance by ~1e-7 relative, far below the metric's own sampling noise. Sums are
    accumulated in float64."""
    per_repeat = max(1, math.ceil(num_projections / num_repeats))
    a_t, b_t = np.ascontiguousarray(a.T), np.ascontiguousarray(b.T)
    distances = []
    for _ in range(num_repeats):
        directions = rng.standard_normal((a.shape[1], per_repeat))
        directions /= np.sqrt((directions ** 2).sum(axis=0, keepdims=True))  # unit vectors
        directions = directions.astype(np.float32)
        total = 0.0
        # as many directions per product as keep it near 16M numbers: few large products (cheap
        # thread start-up) with bounded memory
        for part in _batches(per_repeat, max(1, 2 ** 24 // a.shape[0])):
            difference = _sorted_projections(a_t, directions[:, part]) - _sorted_projections(b_t, directions[:, part])
            total += np.abs(difference).sum(dtype=np.float64)
        distances.append(total / (per_repeat * a.shape[0]))
    return float(np.mean(distances))


def sliced_wasserstein(real, fake, patches_per_image=128, patch_size=7, num_projections=512,
                       num_repeats=4, seed=0):
    """Sliced Wasserstein distance between the Laplacian-pyramid patch distributions of two image
    sets (ProGAN, appendix D). Returns {"swd_<res>": ... per level, finest first, "swd_avg": mean},
    each x 1e3; lower is better (the same distribution scores a few units, from sampling alone).

    As in the paper and its code: a level per resolution down to 16x16, `patches_per_image` random
    7x7 neighbourhoods per image and level, each set's descriptors normalised per channel by that
    set's own mean and std (so the metric compares the shape of the patch distributions, not their
    overall contrast), then the mean absolute difference of the sorted projections onto random unit
    directions. `num_projections` is the total, drawn in `num_repeats` batches and averaged: the
    paper's "512 projections" are the code's 4 repeats x 128 directions. Patch corners are uniform
    over all valid positions (the official code misses the last row and column, an off-by-one of
    no consequence).

    Both sets must give the same number of descriptors. When one set is larger, it is shuffled
    (with `seed`) and cut into len(larger) // len(smaller) disjoint parts of the smaller set's
    size (a remainder of fewer than len(smaller) images is left out); each part is compared with
    the whole smaller set and the distances are averaged per level. So 500 samples against 123
    reals use 492 of the samples, not one random 123: a single draw spread from 21 to 58 on one
    checkpoint.
    """
    real, fake = _check_images("sliced_wasserstein", real=real, fake=fake)
    if patch_size > _MIN_SIZE:
        raise ValueError(f"sliced_wasserstein: patch_size {patch_size} exceeds the smallest level ({_MIN_SIZE})")
    if min(patches_per_image, num_projections, num_repeats) < 1:
        raise ValueError("sliced_wasserstein: patches_per_image, num_projections and num_repeats must be >= 1")
    subset_rng, real_rng, fake_rng, direction_rng = _child_rngs(seed, 4)
    n = min(len(real), len(fake))
    # the larger set as disjoint parts of n images (one part, the whole set, when the sizes match)
    larger = real if len(real) > n else fake
    parts = [larger[rows] for rows in _equal_parts(len(larger), n, subset_rng, exact=True)]

    def descriptors(images, rng):
        # pyramids of a few images at a time: a 1000-image 256x256 pyramid would not fit comfortably
        per_level = None
        for part in _batches(len(images), 128):
            levels = laplacian_pyramid(images[part])
            found = [_patch_descriptors(level, patches_per_image, patch_size, rng).astype(np.float32)
                     for level in levels]
            per_level = [[d] for d in found] if per_level is None else [p + [d] for p, d in zip(per_level, found)]
        sizes = [lvl.shape[-2] for lvl in levels]
        return sizes, [_normalise_descriptors(np.concatenate(p)) for p in per_level]

    # the smaller set's descriptors once; each part of the larger set draws its own patches
    if len(real) > n:
        sizes, fake_levels = descriptors(fake, fake_rng)
        pairs = [(descriptors(part, real_rng)[1], fake_levels) for part in parts]
    else:
        sizes, real_levels = descriptors(real, real_rng)
        pairs = [(real_levels, descriptors(part, fake_rng)[1]) for part in parts]
    per_part = [[_sliced_distance(a, b, num_projections, num_repeats, direction_rng)
                 for a, b in zip(real_levels, fake_levels)] for real_levels, fake_levels in pairs]
    results = {f"swd_{size}": 1e3 * float(d) for size, d in zip(sizes, np.mean(per_part, axis=0))}
    results["swd_avg"] = float(np.mean(list(results.values())))
    return results


# ---- feature space for precision/recall and memorisation -----------------------------------------

def _orientation_histograms(images, bins=6, cells=4, size=32):
    """HOG-like: gradient magnitude of the image at size x size, split softly into `bins` unsigned
    orientation bins, summed in a cells x cells grid. [N, C * bins * cells^2]."""
    image = _area_resize(images, min(size, images.shape[-1], images.shape[-2]))
    gy, gx = np.gradient(image, axis=(-2, -1))
    magnitude = np.hypot(gx, gy)
    position = (np.arctan2(gy, gx) % np.pi) / np.pi * bins          # [0, bins): unsigned orientation
    lower = np.floor(position).astype(int) % bins
    upper_weight = position - np.floor(position)
    histograms = []
    for b in range(bins):
        # linear vote between the two nearest bins, so a tiny rotation changes the features smoothly
        weight = np.where(lower == b, 1 - upper_weight, 0) + np.where((lower + 1) % bins == b, upper_weight, 0)
        histograms.append(_area_resize(magnitude * weight, cells))
    return np.stack(histograms, axis=2).reshape(len(images), -1)


def _band_energies(images, bands=3, cells=4):
    """RMS of the finest `bands` Laplacian-pyramid bands in a cells x cells grid. [N, C * bands * cells^2]."""
    levels = laplacian_pyramid(images, min_size=8)[:-1][:bands]     # band-pass levels only
    # log RMS: sharpness is a ratio (blur divides fine-band energy, it does not subtract from it);
    # the floor, about one grey level of an 8-bit image, stops empty background cells from
    # turning rounding noise into large log differences
    energies = [np.log(np.sqrt(_area_resize(level ** 2, cells)) + _ENERGY_FLOOR) for level in levels]
    return np.concatenate([e.reshape(len(images), -1) for e in energies], axis=1)


def _feature_blocks(images):
    """Raw feature blocks (see the module docstring), each [N, D_block]."""
    blocks = {"layout16": _area_resize(images, 16), "layout8": _area_resize(images, 8),
              "bands": _band_energies(images), "edges": _orientation_histograms(images)}
    return {name: block.reshape(len(images), -1) for name, block in blocks.items()}


def _principal_components(centred, dims):
    """Top principal directions [D, <= dims] of centred data [N, D] and their variances.

    Eigendecomposition of whichever Gram matrix is smaller: the D x D covariance when there are
    more images than features, else the N x N inner products (same nonzero spectrum; directions
    recovered as X^T u / sqrt(lambda)). Directions with no variance (e.g. from duplicate images)
    are dropped, so there are at most min(dims, N - 1) of them."""
    n, d = centred.shape
    if n > d:
        eigenvalues, vectors = np.linalg.eigh(centred.T @ centred)
    else:
        eigenvalues, vectors = np.linalg.eigh(centred @ centred.T)
    order = np.argsort(eigenvalues)[::-1][:min(dims, n - 1)]
    order = order[eigenvalues[order] > 1e-12 * max(eigenvalues.max(), 1e-300)]
    eigenvalues, vectors = eigenvalues[order], vectors[:, order]
    if n <= d:
        vectors = centred.T @ vectors / np.sqrt(eigenvalues)
    return vectors, eigenvalues / (n - 1)


_BLOCK_WEIGHTS = {"layout16": 1.0, "layout8": 1.0, "bands": 1.0, "edges": 1.0}


class Embedding:
    """Weight-free feature map for grayscale slices, fit on a reference (real) set.

    `Embedding(reference, dims=64)(images) -> [N, dims']` with dims' = min(dims, len(reference) - 1,
    raw feature count). See the module docstring for the features and why. Deterministic.
    """

    def __init__(self, reference, dims=64):
        (reference,) = _check_images("Embedding", reference=reference)
        if len(reference) < 2:
            raise ValueError(f"Embedding: need at least 2 reference images, got {len(reference)}")
        blocks = self._blocks(reference)
        self.image_shape = reference.shape[1:]
        self.block_mean = {name: b.mean(axis=0) for name, b in blocks.items()}
        # one scale per block: the block's total std over the reference set
        self.block_scale = {name: np.sqrt(((b - self.block_mean[name]) ** 2).sum(axis=1).mean()) + 1e-12
                            for name, b in blocks.items()}
        features = self._standardise(blocks)
        self.mean = features.mean(axis=0)
        centred = features - self.mean
        self.components, self.explained_variance = _principal_components(centred, dims)

    @staticmethod
    def _blocks(images):
        blocks = {}
        for part in _batches(len(images), 256):
            for name, block in _feature_blocks(images[part]).items():
                blocks.setdefault(name, []).append(block)
        return {name: np.concatenate(parts) for name, parts in blocks.items()}

    def _standardise(self, blocks):
        return np.concatenate([_BLOCK_WEIGHTS[name] * (blocks[name] - self.block_mean[name]) / self.block_scale[name]
                               for name in _BLOCK_WEIGHTS], axis=1)

    def __call__(self, images):
        (images,) = _check_images("embed", images=images)
        if images.shape[1:] != self.image_shape:
            raise ValueError(f"embed: images are {tuple(images.shape[1:])} but the embedding was fit on "
                             f"{tuple(self.image_shape)}")
        return (self._standardise(self._blocks(images)) - self.mean) @ self.components


def embed(images, reference=None, dims=64):
    """Feature vectors [N, <= dims] of `images` in the `Embedding` fit on `reference` (default: the
    images themselves). To compare several sets, fit once: `e = Embedding(reals); e(a), e(b)`."""
    return Embedding(images if reference is None else reference, dims)(images)


def _features_of(features, fit_on, *sets):
    """Apply `features` (None: an Embedding fit on `fit_on`; else a callable images -> [N, D])."""
    feature_map = Embedding(fit_on) if features is None else features
    if not callable(feature_map):
        raise ValueError(f"features must be None or a callable images -> [N, D], got {type(feature_map).__name__}")
    return [np.asarray(feature_map(s), dtype=np.float64).reshape(len(s), -1) for s in sets]


def _squared_distances(a, b, batch=1024):
    """Yield (rows, |a_i - b_j|^2 for the rows) in batches: |a|^2 + |b|^2 - 2 a.b, as matrix products,
    so 2000 x 2000 (or far more) never holds more than batch x len(b) numbers."""
    b_norms = (b ** 2).sum(axis=1)
    for rows in _batches(len(a), batch):
        part = a[rows]
        yield rows, np.maximum((part ** 2).sum(axis=1)[:, None] + b_norms[None, :] - 2.0 * part @ b.T, 0.0)


def _knn_radii(features, k, groups=None):
    """Squared distance of each point to its k-th nearest neighbour in the same set (itself
    excluded). `groups` [N] (optional): points of one group (moved copies of one image) are not
    each other's neighbours, so a ball reaches the k-th nearest point from another image."""
    radii = np.empty(len(features))
    for rows, d in _squared_distances(features, features):
        if groups is None:
            # index 0 of the sorted row is the point itself (distance 0), so index k is the k-th neighbour
            radii[rows] = np.partition(d, k, axis=1)[:, k]
        else:
            d[groups[rows][:, None] == groups[None, :]] = np.inf
            radii[rows] = np.partition(d, k - 1, axis=1)[:, k - 1]
    return radii


def _inside_share(queries, manifold, radii):
    """Share of queries inside at least one ball (centre manifold[i], squared radius radii[i])."""
    inside = np.zeros(len(queries), dtype=bool)
    for rows, d in _squared_distances(queries, manifold):
        inside[rows] = (d <= radii[None, :]).any(axis=1)
    return float(inside.mean())


def _nearest_distances(queries, references):
    """Euclidean distance of each query to its nearest reference."""
    nearest = np.empty(len(queries))
    for rows, d in _squared_distances(queries, references):
        nearest[rows] = d.min(axis=1)
    return np.sqrt(nearest)


def image_gradients(images):
    """Horizontal and vertical differences of neighbouring pixels, flattened: [N, F] float64. A
    uniform change of brightness or of the background level leaves them unchanged, so a distance
    between two images' gradients measures their structure, not their intensity. The diversity
    floor's `space="gradients"` (losses.py) uses the same features."""
    x = np.asarray(images, dtype=np.float64)
    dx = x[..., :, 1:] - x[..., :, :-1]
    dy = x[..., 1:, :] - x[..., :-1, :]
    return np.concatenate([dx.reshape(len(x), -1), dy.reshape(len(x), -1)], axis=1)


def mean_pair_distance(images, max_images=512, seed=0):
    """Mean RMS pixel distance between distinct pairs of `images` [N, C, H, W]; a random subset of
    `max_images` (drawn with `seed`) stands for a larger set. The training loss's diversity floor
    uses it on the training images as its target."""
    x = np.asarray(images, dtype=np.float64).reshape(len(images), -1)
    if len(x) < 2:
        raise ValueError(f"mean_pair_distance needs at least 2 images, got {len(x)}")
    if len(x) > max_images:
        x = x[np.sort(np.random.default_rng(seed).choice(len(x), max_images, replace=False))]
    total = 0.0
    for rows, d in _squared_distances(x, x):
        d[np.arange(d.shape[0]), np.arange(rows.start, rows.stop)] = 0.0     # each image with itself
        total += np.sqrt(d / x.shape[1]).sum()
    return float(total / (len(x) * (len(x) - 1)))


def _equal_parts(larger, smaller, rng, exact=False):
    """Sorted index sets that split range(larger) at random into larger // smaller parts: near-equal
    parts covering every index (each at least `smaller` long), or with `exact` parts of exactly
    `smaller` indices (a remainder shorter than that left out). One part when larger < 2 * smaller."""
    order = rng.permutation(larger)
    count = max(1, larger // smaller)
    parts = [order[i * smaller:(i + 1) * smaller] for i in range(count)] if exact else np.array_split(order, count)
    return [np.sort(part) for part in parts]


def _mean_over_equal_parts(real_count, fake_count, rng, score):
    """Mean of score(real_rows, fake_rows) -> (precision, recall) over index sets that compare
    the two sets at equal size.

    k-NN balls shrink as a set grows, so a manifold built from 1000 samples covers less than one
    built from 123: recall against 123 reals would fall as more samples are drawn. Kynkaanniemi
    et al. compare equal-sized sets; here the larger set is split at random into
    len(larger) // len(smaller) near-equal parts (each at least as large as the smaller set), and
    each part is compared with the whole smaller set. One pair when the sizes are equal or the
    larger is less than twice the smaller. Returns (precision, recall) as floats."""
    larger, smaller = max(real_count, fake_count), min(real_count, fake_count)
    parts = _equal_parts(larger, smaller, rng)
    whole = np.arange(smaller)
    pairs = [(whole, part) for part in parts] if fake_count >= real_count else [(part, whole) for part in parts]
    precision, recall = np.mean([score(real_rows, fake_rows) for real_rows, fake_rows in pairs], axis=0)
    return float(precision), float(recall)


def _precision_recall_sets(function, real, fake, k, limit, seed):
    """Checked (real, fake) for a precision/recall, each cut to `limit` random images when larger,
    and the two sets' random generators (children of `seed`)."""
    real, fake = _check_images(function, real=real, fake=fake)
    if k < 1:
        raise ValueError(f"{function}: k must be >= 1, got {k}")
    if len(real) <= k or len(fake) <= k:
        raise ValueError(f"{function}: need more than k={k} images per set, got {len(real)} real "
                         f"and {len(fake)} fake")
    rngs = _child_rngs(seed, 2)
    real, fake = (s[np.sort(rng.choice(len(s), limit, replace=False))] if len(s) > limit else s
                  for s, rng in zip((real, fake), rngs))
    return real, fake, rngs


def precision_recall(real, fake, k=3, features=None, seed=0, max_samples=10_000):
    """Improved precision and recall (Kynkaanniemi et al. 2019) with k-NN balls.

    Each set's manifold is the union of balls around its feature vectors, each ball reaching the
    vector's k-th nearest neighbour in its own set. precision = share of fake samples inside the
    real manifold; recall = share of real samples inside the fake manifold. `features`: None for
    the weight-free `Embedding` fit on `real` (see the module docstring), or any callable
    images -> [N, D]. Sets larger than `max_samples` are randomly subsampled with `seed` (the
    default feature map itself is deterministic). Sets of different sizes are compared at equal
    size: the larger is split at random into parts no smaller than the other set, and the scores
    are averaged over the parts (`_mean_over_equal_parts`), so the numbers do not drift with the
    number of samples drawn. Returns {"precision": p, "recall": r}.
    """
    real, fake, rngs = _precision_recall_sets("precision_recall", real, fake, k, max_samples, seed)
    real_features, fake_features = _features_of(features, real, real, fake)
    def score(real_rows, fake_rows):
        r, f = real_features[real_rows], fake_features[fake_rows]
        return _inside_share(f, r, _knn_radii(r, k)), _inside_share(r, f, _knn_radii(f, k))

    precision, recall = _mean_over_equal_parts(len(real), len(fake), rngs[0], score)
    return {"precision": precision, "recall": recall}


# ---- nuisance-tolerant precision and recall ------------------------------------------------------

def nuisance_augment(images, copies=4, shift=2 / 64, rotate=5.0, scale=0.05, brightness=0.1, seed=0):
    """`copies` randomly moved versions of every image, [copies * N, C, H, W]: each a bilinear
    rotation by up to +-`rotate` degrees, a zoom by a factor in 1 +- `scale` and a shift of up to
    +-`shift` of the image size per axis about the centre (the background, -1, fills in), and its
    intensity above black multiplied by a factor in 1 +- `brightness`. Uniform draws from `seed`."""
    (images,) = _check_images("nuisance_augment", images=images)
    N, C, H, W = images.shape
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[:H, :W]
    grid = np.stack([rows.ravel(), cols.ravel()]).astype(np.float64)             # [2, HW]
    centre = np.array([(H - 1) / 2, (W - 1) / 2])[:, None]
    flat = images.reshape(N, C, H * W)
    out = []
    for _ in range(copies):
        angle = np.deg2rad(rng.uniform(-rotate, rotate, N))
        zoom = rng.uniform(1 - scale, 1 + scale, N)
        offset = rng.uniform(-shift, shift, (N, 2)) * np.array([H, W])
        gain = rng.uniform(1 - brightness, 1 + brightness, N)
        cos, sin = np.cos(angle) / zoom, np.sin(angle) / zoom
        inverse = np.stack([np.stack([cos, -sin], 1), np.stack([sin, cos], 1)], 1)  # [N, 2, 2] output -> input
        source = inverse @ (grid - centre - offset[:, :, None]) + centre              # [N, 2, HW]
        top, left = np.floor(source[:, 0]), np.floor(source[:, 1])
        fy, fx = source[:, 0] - top, source[:, 1] - left
        warped = np.zeros((N, C, H * W))
        for dy, dx, weight in ((0, 0, (1 - fy) * (1 - fx)), (0, 1, (1 - fy) * fx),
                               (1, 0, fy * (1 - fx)), (1, 1, fy * fx)):
            y, x = (top + dy).astype(int), (left + dx).astype(int)
            inside = (y >= 0) & (y < H) & (x >= 0) & (x < W)
            index = np.where(inside, y * W + x, 0)
            value = np.where(inside[:, None], np.take_along_axis(flat, np.broadcast_to(index[:, None], flat.shape), 2), -1.0)
            warped += weight[:, None] * value
        out.append(np.clip((warped + 1) * gain[:, None, None] - 1, -1, 1).reshape(N, C, H, W))
    return np.concatenate(out)


def precision_recall_tolerant(real, fake, k=3, copies=4, seed=0, max_samples=10_000, **nuisance):
    """Precision and recall as `precision_recall`, with both manifolds widened by small pose and
    brightness changes (`nuisance_augment`: +-2 px at 64, +-5 degrees, +-5 % zoom, +-10 %
    brightness by default).

    On a dataset of one template brain (the default data: 123 neighbouring slices of MNI152) the
    plain k-NN manifold is a thin thread through slice position, and its balls reach only about
    one slice step: real slices moved by a pixel, turned by a few degrees or made a little darker
    score a precision near zero there (docs/experiments.md, "Which precision and recall to
    read"). Here the real set is
    `copies` nuisance-moved versions of every real image (the embedding is fit on them), each
    ball reaching the k-th nearest copy of another image (copies of one image are not counted as
    neighbours), and precision is the share of fakes inside that widened real manifold; recall is
    the share of the (unmoved) reals inside the fake manifold widened the same way. Changes within
    the nuisance range keep both near 1; blur, noise and wrong anatomy still lower them (the
    calibration table of the same section, from scripts/calibrate_metrics.py). Sets of different sizes are compared at equal size, as in
    `precision_recall`. Returns {"precision_tolerant", "recall_tolerant"}.
    """
    if copies < 1:
        raise ValueError(f"precision_recall_tolerant: copies must be >= 1, got {copies}")
    real, fake, rngs = _precision_recall_sets("precision_recall_tolerant", real, fake, k,
                                              max(1, max_samples // copies), seed)
    real_seed, fake_seed = (int(rng.integers(2 ** 31)) for rng in rngs)
    wide_real = nuisance_augment(real, copies, seed=real_seed, **nuisance)
    wide_fake = nuisance_augment(fake, copies, seed=fake_seed, **nuisance)
    embedding = Embedding(wide_real)
    wide_real_features, real_features = embedding(wide_real), embedding(real)
    fake_features, wide_fake_features = embedding(fake), embedding(wide_fake)
    # copies of one image are not each other's neighbours: a ball reaches the k-th nearest copy of
    # another image, so its radius is at least the plain one plus the nuisance spread
    def wide(features, rows, count):
        """The moved copies of images `rows` (copy c of image i is row c * count + i) and their
        image index within `rows`."""
        index = np.concatenate([c * count + rows for c in range(copies)])
        return features[index], np.tile(np.arange(len(rows)), copies)

    def score(real_rows, fake_rows):
        real_manifold, real_groups = wide(wide_real_features, real_rows, len(real))
        fake_manifold, fake_groups = wide(wide_fake_features, fake_rows, len(fake))
        return (_inside_share(fake_features[fake_rows], real_manifold, _knn_radii(real_manifold, k, real_groups)),
                _inside_share(real_features[real_rows], fake_manifold, _knn_radii(fake_manifold, k, fake_groups)))

    precision, recall = _mean_over_equal_parts(len(real), len(fake), rngs[0], score)
    return {"precision_tolerant": precision, "recall_tolerant": recall}


# ---- MS-SSIM and diversity -----------------------------------------------------------------------

def _gaussian_taps(size=11, sigma=1.5):
    x = np.arange(size) - (size - 1) / 2
    taps = np.exp(-x ** 2 / (2 * sigma ** 2))
    return taps / taps.sum()


def _ssim_and_cs(a, b, data_range=2.0):
    """Mean SSIM and contrast-structure term per image and channel: [N, C] each ('valid' 11x11
    Gaussian windows, sigma 1.5, K1 = 0.01, K2 = 0.03, as Wang et al.)."""
    taps = _gaussian_taps()
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_a, mu_b = _filter2d(a, taps, "valid"), _filter2d(b, taps, "valid")
    var_a = _filter2d(a * a, taps, "valid") - mu_a ** 2
    var_b = _filter2d(b * b, taps, "valid") - mu_b ** 2
    cov = _filter2d(a * b, taps, "valid") - mu_a * mu_b
    cs = (2 * cov + c2) / (var_a + var_b + c2)
    luminance = (2 * mu_a * mu_b + c1) / (mu_a ** 2 + mu_b ** 2 + c1)
    return (luminance * cs).mean(axis=(-2, -1)), cs.mean(axis=(-2, -1))


def _ms_ssim_scales(height, width, window=11):
    """As many scales as keep the coarsest image at least one window wide, at most 5."""
    scales = 1
    while scales < 5 and min(height, width) // 2 ** scales >= window:
        scales += 1
    return scales


def ms_ssim(a, b):
    """Multi-scale SSIM (Wang et al. 2003) of each pair (a[i], b[i]) -> array [N] in [0, 1].

    Images in [-1, 1], so the data range is 2. At each scale a 'valid' 11x11 Gaussian window
    (sigma 1.5) gives the contrast-structure term; the coarsest scale also contributes luminance;
    between scales images are 2x2-averaged (Wang's MATLAB code). Scales: as many as keep the
    coarsest image >= 11 pixels, at most 5 (16-21 px: 1, i.e. plain SSIM; 64: 3; 256: 5), with the
    first that-many standard weights (0.0448, 0.2856, 0.3001, 0.2363, 0.1333) renormalised to sum
    to 1. Negative terms are clamped to 0 before the powers, as TensorFlow's ssim_multiscale does
    (a negative base to a fractional power is undefined). Channels are averaged. Symmetric, and 1
    exactly for identical images.
    """
    a, b = _check_images("ms_ssim", a=a, b=b)
    if len(a) != len(b):
        raise ValueError(f"ms_ssim: a and b must hold the same number of images (pairs), got {len(a)} and {len(b)}")
    scales = _ms_ssim_scales(*a.shape[-2:])
    weights = _MS_SSIM_WEIGHTS[:scales] / _MS_SSIM_WEIGHTS[:scales].sum()
    result = np.empty(len(a))
    # a few pairs at a time: the 11-tap filter passes are memory-bound, and ~64k pixels a batch
    # keeps them in cache (5x faster at 256x256 than whole-set arrays)
    for rows in _batches(len(a), max(1, 65536 // a[0].size)):
        x, y = a[rows], b[rows]
        value = np.ones(x.shape[:2])
        for scale in range(scales):
            ssim, cs = _ssim_and_cs(x, y)
            term = ssim if scale == scales - 1 else cs
            value *= np.maximum(term, 0.0) ** weights[scale]
            if scale < scales - 1:
                x, y = _pool2(x), _pool2(y)
        result[rows] = value.mean(axis=1)
    return result


def _pool2(x):
    """2x2 average pooling (an odd last row/column is dropped)."""
    h, w = x.shape[-2] // 2 * 2, x.shape[-1] // 2 * 2
    x = x[..., :h, :w]
    return 0.25 * (x[..., ::2, ::2] + x[..., 1::2, ::2] + x[..., ::2, 1::2] + x[..., 1::2, 1::2])


def _distinct_pairs(count, num_pairs, rng):
    """Index pairs (i, j), i != j: every unordered pair when there are no more than num_pairs of
    them (exact and cheaper for small sets), else num_pairs random ones drawn with replacement."""
    if count * (count - 1) // 2 <= num_pairs:
        return np.triu_indices(count, k=1)
    first = rng.integers(0, count, num_pairs)
    second = (first + rng.integers(1, count, num_pairs)) % count
    return first, second


def diversity(fake, real, num_pairs=500, seed=0):
    """Mean MS-SSIM over `num_pairs` random pairs of distinct images within each set (all pairs
    when a set has no more than num_pairs of them), and
    diversity_ratio = (1 - ms_ssim_fake) / (1 - ms_ssim_real): ~1 when samples differ from each
    other as much as real slices do, -> 0 under mode collapse, > 1 when samples are more varied
    than the data (e.g. noise). Returns {"ms_ssim_fake", "ms_ssim_real", "diversity_ratio"}."""
    fake, real = _check_images("diversity", fake=fake, real=real)
    if len(fake) < 2 or len(real) < 2:
        raise ValueError(f"diversity: need at least 2 images per set, got {len(fake)} fake and {len(real)} real")
    if num_pairs < 1:
        raise ValueError(f"diversity: num_pairs must be >= 1, got {num_pairs}")
    fake_rng, real_rng = _child_rngs(seed, 2)
    i, j = _distinct_pairs(len(fake), num_pairs, fake_rng)
    ms_fake = float(ms_ssim(fake[i], fake[j]).mean())
    i, j = _distinct_pairs(len(real), num_pairs, real_rng)
    ms_real = float(ms_ssim(real[i], real[j]).mean())
    # the floor only matters when every real image is identical; then any fake variety reads as large
    ratio = (1.0 - ms_fake) / max(1.0 - ms_real, 1e-12)
    return {"ms_ssim_fake": ms_fake, "ms_ssim_real": ms_real, "diversity_ratio": float(ratio)}


# ---- memorisation --------------------------------------------------------------------------------

def memorisation(fake, train, heldout, features=None):
    """How close samples come to training images, measured against held-out reals.

    For each fake its distance to the nearest training image, in `embed` space (an `Embedding`
    fit on `train`, or `features`, a callable images -> [N, D]) and as the pixel RMS difference;
    the same for each held-out real. Returns medians, their ratios fake / held-out ("much below 1
    means the generator copies training images"; an honest generator sits near or above 1), and
    near_copy_share: the share of fakes nearer to the training set (in embed space) than the 5%
    nearest held-out reals are; ~0.05 (or less) without copying, the copied share when some
    samples are copies, which a median can hide.
    """
    fake, train, heldout = _check_images("memorisation", fake=fake, train=train, heldout=heldout)
    if len(train) < 2:
        raise ValueError(f"memorisation: need at least 2 training images, got {len(train)}")
    train_features, fake_features, heldout_features = _features_of(features, train, train, fake, heldout)
    feature_fake = _nearest_distances(fake_features, train_features)
    feature_heldout = _nearest_distances(heldout_features, train_features)
    pixels = fake[0].size
    flat = lambda images: images.reshape(len(images), -1)
    pixel_fake = _nearest_distances(flat(fake), flat(train)) / np.sqrt(pixels)
    pixel_heldout = _nearest_distances(flat(heldout), flat(train)) / np.sqrt(pixels)
    median = lambda d: float(np.median(d))
    return {
        "nn_dist_fake": median(feature_fake), "nn_dist_heldout": median(feature_heldout),
        "memorisation_ratio": median(feature_fake) / max(median(feature_heldout), 1e-12),
        "nn_pixel_rms_fake": median(pixel_fake), "nn_pixel_rms_heldout": median(pixel_heldout),
        "memorisation_ratio_pixel": median(pixel_fake) / max(median(pixel_heldout), 1e-12),
        "near_copy_share": float(np.mean(feature_fake < np.quantile(feature_heldout, 0.05))),
    }


# ---- everything at once --------------------------------------------------------------------------

def evaluate(real, fake, train=None, heldout=None, seed=0):
    """Run every metric that applies and return a flat dict of floats (JSON-serialisable).

    Always: sliced_wasserstein. precision_recall when both sets hold more than k = 3 images;
    diversity when both hold at least 2; memorisation when `train` and `heldout` are given.
    """
    real, fake = _check_images("evaluate", real=real, fake=fake)
    results = dict(sliced_wasserstein(real, fake, seed=seed))
    if min(len(real), len(fake)) > 3:
        results.update(precision_recall(real, fake, seed=seed))
        results.update(precision_recall_tolerant(real, fake, seed=seed))
    if min(len(real), len(fake)) >= 2:
        results.update(diversity(fake, real, seed=seed))
    if train is not None and heldout is not None:
        results.update(memorisation(fake, train, heldout))
    return {key: float(value) for key, value in results.items()}


_DIRECTION = [("swd_", "lower is better"),
              ("precision_tolerant", "higher is better; pose/brightness-tolerant"),
              ("recall_tolerant", "higher is better; pose/brightness-tolerant"),
              ("precision", "higher is better; exact k-NN"), ("recall", "higher is better; exact k-NN"),
              ("diversity_ratio", "~1 as varied as real, -> 0 collapse"),
              ("memorisation_ratio", "~1 fine, << 1 copies training images"),
              ("near_copy_share", "~0.05 fine, higher: share of near-copies")]


def format_table(results):
    """Two aligned columns (metric, value) with a note on how to read the main ones."""
    if not results:
        return "(no metrics)"
    width = max(len("metric"), *(len(str(key)) for key in results))
    lines = [f"{'metric'.ljust(width)}  {'value':>10}", f"{'-' * width}  {'-' * 10}"]
    for key, value in results.items():
        shown = f"{value:10.4f}" if isinstance(value, float) else f"{value!s:>10}"
        note = next((text for prefix, text in _DIRECTION if str(key).startswith(prefix)), "")
        lines.append(f"{str(key).ljust(width)}  {shown}" + (f"  ({note})" if note else ""))
    return "\n".join(lines)
