"""The body mask: the one home for "which pixels are the patient".

Metrics score inside it (``mask="body"``), the benchmark measures the sampler's spread in
it, and the baselines measure noise or choose weights in it. Two uses need two settings of
the same function: a clean reference takes the largest connected region above the
threshold with its holes filled (lungs and bowel gas are inside, the table is not); a noisy
FBP is smoothed first, and then thresholded alone (``largest_component=False``), since
noise breaks it into many regions.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .errors import InputError

__all__ = ["body_mask"]


def body_mask(hu: np.ndarray, threshold: float = -500.0, *, smooth: int = 1,
              largest_component: bool = True) -> np.ndarray:
    """Mask of the patient body in HU image(s).

    Parameters
    ----------
    hu : ndarray [..., H, W]
        Image(s) in HU.
    threshold : float
        HU above which a pixel may belong to the body.
    smooth : int
        Width of a box filter applied before the threshold (1: none; 5 suits a
        low-dose FBP).
    largest_component : bool
        Keep the largest connected region with its holes filled (table and foam stay
        outside); ``False`` keeps every pixel above the threshold.

    Returns
    -------
    ndarray, bool [..., H, W]

    Examples
    --------
    >>> from turndiff.phantoms import make_phantom
    >>> m = body_mask(make_phantom(64, seed=0))
    >>> bool(m[32, 32]), bool(m[0, 0])
    (True, False)
    """
    hu = np.asarray(hu)
    if hu.ndim < 2:
        raise InputError(f"body_mask needs an image [..., H, W], got shape {hu.shape}")
    if int(smooth) < 1:
        raise InputError(f"smooth must be >= 1, got {smooth}")
    if smooth > 1:
        hu = ndimage.uniform_filter(np.asarray(hu, np.float32), size=(1,) * (hu.ndim - 2) + (smooth, smooth),
                                    mode="nearest")
    if not largest_component:
        return hu > threshold
    flat = hu.reshape((-1,) + hu.shape[-2:])
    out = np.zeros(flat.shape, bool)
    for k, img in enumerate(flat):
        lab, count = ndimage.label(img > threshold)
        if count == 0:
            continue
        sizes = np.bincount(lab.ravel())
        sizes[0] = 0
        out[k] = ndimage.binary_fill_holes(lab == int(np.argmax(sizes)))
    return out.reshape(hu.shape)
