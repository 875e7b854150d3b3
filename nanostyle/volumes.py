"""Brain volumes (NIfTI .nii/.nii.gz, Analyze .img/.hdr pairs) cut into 2-D slices.

A volume is first turned to the closest canonical RAS orientation (nibabel.as_closest_canonical:
array axes point to the subject's Right, Anterior, Superior), so "axial" means the same on every
scanner. Intensities are scaled per volume by robust percentiles, not by the maximum (one hot
voxel would darken the rest):

    v' = clip(255 (v - p_low) / (p_high - p_low), 0, 255),   p_low, p_high = 0.5th, 99.5th percentile

A slice is kept when at least `min_brain_fraction` (default 10%) of its pixels are brighter than
10% of that range: the slices above the skull and below the cerebellum are left out.
Slices are shown upright, the subject's right on the image's right (neurological convention):
axial anterior at the top, coronal and sagittal superior at the top (sagittal: anterior on the
right). nibabel is an optional extra: `pip install "nanostyle[nifti]"`.
"""
import os

import numpy as np

VOLUME_SUFFIXES = (".nii.gz", ".nii", ".img.gz", ".img", ".hdr.gz", ".hdr")
AXES = ("axial", "coronal", "sagittal")
LOW_PERCENTILE, HIGH_PERCENTILE = 0.5, 99.5
BRAIN_LEVEL = 0.1               # a pixel is "brain" above this share of the intensity range
MIN_BRAIN_FRACTION = 0.1        # a slice is kept when at least this share of pixels is brain
DEFAULT_MAX_VOXELS = 2 ** 28    # 1 GiB as float32: a 645^3 volume; NANOSTYLE_MAX_VOXELS raises it
INSTALL_HINT = 'reading NIfTI/Analyze volumes needs nibabel: pip install "nanostyle[nifti]"'


class VolumeError(ValueError):
    """One volume cannot be used; the message says why (the caller names the file)."""


def volume_suffix(name):
    """The volume suffix of a file name (".nii.gz", ".img", ...), or None."""
    lower = name.lower()
    return next((s for s in VOLUME_SUFFIXES if lower.endswith(s)), None)


def analyze_companion(path):
    """For an Analyze image its header's path and the reverse (x.img <-> x.hdr, .gz kept)."""
    suffix = volume_suffix(path)
    swap = {".img": ".hdr", ".hdr": ".img", ".img.gz": ".hdr.gz", ".hdr.gz": ".img.gz"}
    if suffix not in swap:
        return None
    stem = path[:-len(suffix)]
    upper = path[-len(suffix):].isupper()
    other = swap[suffix]
    return stem + (other.upper() if upper else other)


def volumes_in(directory, names):
    """The volumes among the file names of one folder, each listed once: an Analyze .img/.hdr
    pair is one volume, named by its .img. -> [(path, [companion paths])]."""
    present = set(names)
    found = []
    for name in names:
        suffix = volume_suffix(name)
        if suffix is None:
            continue
        companion = analyze_companion(name)
        if suffix.startswith(".hdr") and companion in present:
            continue                                  # listed with its .img
        extra = [os.path.join(directory, companion)] if companion in present else []
        found.append((os.path.join(directory, name), extra))
    return found


def require_nibabel():
    try:
        import nibabel
    except ImportError:
        from .data import DataError
        raise DataError(INSTALL_HINT) from None
    return nibabel


def read_volume(path, max_voxels=DEFAULT_MAX_VOXELS):
    """float32 [R, A, S]: the volume at `path` in canonical RAS orientation. Raises VolumeError
    for 2-D and 4-D volumes (a trailing axis of length 1, as OASIS-1's Analyze files have, is
    dropped), empty, too large, constant (all-zero) or non-finite ones."""
    nibabel = require_nibabel()
    suffix = volume_suffix(path)
    companion = analyze_companion(path)
    if companion and not os.path.exists(companion):
        kind = "image without its header" if suffix.startswith(".img") else "header without its image"
        raise VolumeError(f"Analyze {kind}: {os.path.basename(companion)} is missing beside it")
    image = nibabel.load(path)
    shape = tuple(int(n) for n in image.shape)
    if len(shape) < 3:
        raise VolumeError(f"{len(shape)}-D {shape}: a volume needs 3 dimensions")
    series = int(np.prod(shape[3:]))
    if series > 1:
        raise VolumeError(f"{len(shape)}-D {shape}: a series of {series} volumes (fMRI, DWI, ...); "
                          "pass 3-D volumes, e.g. one saved from image.slicer[..., 0] in nibabel")
    voxels = int(np.prod(shape[:3]))
    if voxels == 0:
        raise VolumeError(f"no voxels (shape {shape}): an empty volume")
    if voxels > max_voxels:
        raise VolumeError(f"{voxels:,} voxels {shape[:3]}, above the limit of {max_voxels:,}; "
                          "raise it with NANOSTYLE_MAX_VOXELS or max_voxels= if the file is genuine")
    canonical = nibabel.as_closest_canonical(image)
    volume = np.asarray(canonical.get_fdata(dtype=np.float32))
    volume = volume.reshape(volume.shape[:3])
    finite = np.isfinite(volume)
    if not finite.all():
        raise VolumeError(f"{int(volume.size - finite.sum()):,} non-finite voxels (NaN or infinity); "
                          "replace them (e.g. numpy.nan_to_num) and save it again")
    low, high = float(volume.min()), float(volume.max())
    if low == high:
        raise VolumeError(f"empty: every voxel is {low:g}")
    return volume


def scale_to_uint8(volume):
    """uint8 volume: [p_low, p_high] (the 0.5th and 99.5th percentiles) mapped to [0, 255]."""
    low, high = (float(p) for p in np.percentile(volume, [LOW_PERCENTILE, HIGH_PERCENTILE]))
    if high <= low:
        raise VolumeError(f"nearly empty: its {LOW_PERCENTILE}th and {HIGH_PERCENTILE}th intensity "
                          f"percentiles are both {low:g}")
    scaled = volume - np.float32(low)              # one float32 copy, scaled in place: a volume
    scaled *= np.float32(255.0 / (high - low))     # in flight holds two copies of itself, not four
    np.clip(scaled, 0, 255, out=scaled)
    return np.round(scaled, out=scaled).astype(np.uint8)


def cut_slices(volume, axis):
    """2-D slices of a RAS volume along `axis`, upright: -> [(index, uint8 [rows, cols])]."""
    if axis == "axial":                 # fix S: rows anterior -> posterior, columns left -> right
        return [(k, volume[:, :, k].T[::-1]) for k in range(volume.shape[2])]
    if axis == "coronal":               # fix A: rows superior -> inferior, columns left -> right
        return [(j, volume[:, j, :].T[::-1]) for j in range(volume.shape[1])]
    if axis == "sagittal":              # fix R: rows superior -> inferior, columns posterior -> anterior
        return [(i, volume[i, :, :].T[::-1]) for i in range(volume.shape[0])]
    raise ValueError(f"axis must be one of {', '.join(AXES)} (--axis); got {axis!r}")


def brain_slices(path, axis="axial", min_brain_fraction=MIN_BRAIN_FRACTION,
                 max_voxels=DEFAULT_MAX_VOXELS):
    """The slices of the volume at `path` that show enough brain: [(index, uint8 2-D)], in index
    order. Raises VolumeError when the volume is unusable or no slice qualifies."""
    volume = scale_to_uint8(read_volume(path, max_voxels))
    level = BRAIN_LEVEL * 255
    kept = [(k, np.ascontiguousarray(s)) for k, s in cut_slices(volume, axis)
            if np.mean(s > level) >= min_brain_fraction]
    if not kept:
        raise VolumeError(f"no {axis} slice has {min_brain_fraction:.0%} of its pixels above "
                          f"{BRAIN_LEVEL:.0%} of the intensity range; lower min_brain_fraction or check "
                          "the volume")
    return kept
