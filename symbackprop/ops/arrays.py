"""numpy helpers of the operations' reference faces: windows, padding, dilated kernels.

Imports numpy alone, like the reference faces that use it (a test holds them to it).
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def windows(x: np.ndarray, kernel: tuple[int, int], stride: tuple[int, int]) -> np.ndarray:
    """(B, C, H, W) → (B, C, OH, OW, kh, kw): the patch of x under each output position."""
    return sliding_window_view(x, kernel, axis=(2, 3))[:, :, :: stride[0], :: stride[1]]


def pad(x: np.ndarray, padding: tuple[int, int], value: float = 0.0) -> np.ndarray:
    """x (B, C, H, W) with ``padding`` rows and columns of ``value`` on every side."""
    ph, pw = padding
    return np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=value)


def dilated_kernel(weight: np.ndarray, dilation: tuple[int, int]) -> np.ndarray:
    """The kernel with d − 1 zeros between its weights: a dilated convolution is a plain one
    with this kernel."""
    out, channels, kh, kw = weight.shape
    dh, dw = dilation
    dilated = np.zeros((out, channels, dh * (kh - 1) + 1, dw * (kw - 1) + 1))
    dilated[:, :, ::dh, ::dw] = weight
    return dilated
