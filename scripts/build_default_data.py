"""Rebuild nanostyle/assets/mni152_axial.npz, the default training data, from the MNI152 2009a
T1 template that the nilearn wheel carries.

    pip install nilearn nibabel      # needed by this script only, not by nanostyle
    python scripts/build_default_data.py

The volume (197 x 233 x 189, 1 mm, RAS) is cut into axial slices (along the superior axis).
Each slice is shown upright in the neurological convention: anterior (the nose) at the top,
the subject's right on the image's right. A slice is kept when at least 10% of its pixels are
brighter than 10% of the volume's maximum (about 130 slices show enough brain). Intensities
are mapped to uint8 with the window [0, 99.5th percentile of the volume], each slice is padded
to a square with background and resized to 128 x 128 (Lanczos): enough for --res up to 128,
and small enough to ship inside the package.
"""
import os

import numpy as np
from PIL import Image

OUT = os.path.join(os.path.dirname(__file__), "..", "nanostyle", "assets", "mni152_axial.npz")
SIZE = 128
MIN_BRAIN_FRACTION = 0.10


def main():
    import nibabel
    import nilearn

    path = os.path.join(os.path.dirname(nilearn.__file__), "datasets", "data",
                        "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz")
    image = nibabel.load(path)
    assert nibabel.aff2axcodes(image.affine) == ("R", "A", "S"), nibabel.aff2axcodes(image.affine)
    volume = np.asarray(image.get_fdata(), dtype=np.float64)
    high = np.percentile(volume, 99.5)
    threshold = 0.1 * volume.max()
    slices, indices = [], []
    for k in range(volume.shape[2]):
        axial = volume[:, :, k].T[::-1, :]           # rows: anterior at top; columns: left -> right
        if (axial > threshold).mean() < MIN_BRAIN_FRACTION:
            continue
        pixels = np.clip(axial / high * 255, 0, 255).round().astype(np.uint8)
        h, w = pixels.shape
        side = max(h, w)
        square = np.zeros((side, side), dtype=np.uint8)
        square[(side - h) // 2:(side - h) // 2 + h, (side - w) // 2:(side - w) // 2 + w] = pixels
        resized = Image.fromarray(square).resize((SIZE, SIZE), Image.LANCZOS)
        slices.append(np.asarray(resized))
        indices.append(k)
    slices = np.stack(slices)
    np.savez_compressed(OUT, slices=slices, slice_index=np.asarray(indices, dtype=np.int16),
                        source=np.asarray("mni_icbm152_t1_tal_nlin_sym_09a (nilearn)"))
    print(f"wrote {os.path.normpath(OUT)}: {slices.shape[0]} slices of {SIZE}x{SIZE}, "
          f"axial indices {indices[0]}..{indices[-1]}, {os.path.getsize(OUT) / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
