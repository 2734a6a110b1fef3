"""An independent numpy reference for antialiased bilinear downsizing (the data tests' truth for resized frames).

PIL's BILINEAR filter with reducing_gap=None and tf.image.resize(method="bilinear", antialias=True) both weight the
source pixels of output pixel i with a triangle (tent) of half-width max(scale, 1) source pixels centred on
(i + 1/2) * scale, scale = input size / output size, normalised to sum 1 (so it stays normalised at the borders).
This is not a box mean: at an integer factor f the tent spans 2 f pixels (weights 1, 3, 3, 1 over 8 at f = 2).
"""

import numpy as np


def tent_weights(n_in: int, n_out: int) -> np.ndarray:
    """[n_out, n_in] row-stochastic weights of the triangle filter from n_in to n_out samples."""
    scale = n_in / n_out
    half_width = max(scale, 1.0)
    centres = (np.arange(n_out) + 0.5) * scale  # in source pixels; source pixel j covers [j, j + 1)
    w = np.maximum(0.0, 1.0 - np.abs(np.arange(n_in)[None] + 0.5 - centres[:, None]) / half_width)
    return w / w.sum(axis=1, keepdims=True)


def tent_resize(frames: np.ndarray, resolution: int) -> np.ndarray:
    """[..., H, W, C] -> float64 [..., R, R, C] by the separable triangle filter (no cropping, no rounding)."""
    h, w = frames.shape[-3:-1]
    return np.einsum(
        "ih,...hwc,jw->...ijc",
        tent_weights(h, resolution),
        frames.astype(np.float64),
        tent_weights(w, resolution),
        optimize=True,
    )
