"""numpy helpers of the operations' reference faces: windows, padding, dilated kernels, and
the activations with PyTorch's conventions (the reference backprop's too).

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


def bilinear_matrix(size: int, scale: int) -> np.ndarray:
    """U (size·scale, size): output row y reads (y + ½)/s − ½, clamped at 0, between its floor
    and the next row (the last row standing in past the end), linearly — numpy alone."""
    source = np.maximum((np.arange(size * scale) + 0.5) / scale - 0.5, 0.0)
    low = np.floor(source).astype(int)
    high = np.minimum(low + 1, size - 1)
    far = source - low
    matrix = np.zeros((size * scale, size))
    np.add.at(matrix, (np.arange(size * scale), low), 1.0 - far)
    np.add.at(matrix, (np.arange(size * scale), high), far)
    return matrix


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return np.exp(-np.logaddexp(0.0, -z))  # 1 / (1 + e^-z) without overflow


LEAKY_SLOPE = 0.01

# name -> (a(z), da/dz(z)), as PyTorch computes them: ReLU′(0) = 0, leaky ReLU′(0) = 0.01
# (slope 0.01); softplus the exact log(1 + e^z) (torch's returns z past 20)
ACTIVATIONS = {
    "identity": (lambda z: z, np.ones_like),
    "sigmoid": (_sigmoid, lambda z: _sigmoid(z) * (1 - _sigmoid(z))),
    "tanh": (np.tanh, lambda z: 1 - np.tanh(z) ** 2),
    "relu": (lambda z: np.maximum(z, 0.0), lambda z: (z > 0).astype(float)),
    "softplus": (lambda z: np.logaddexp(0.0, z), _sigmoid),
    "leaky_relu": (
        lambda z: np.where(z > 0, z, LEAKY_SLOPE * z),
        lambda z: np.where(z > 0, 1.0, LEAKY_SLOPE),
    ),
}
KINKED = {"relu", "leaky_relu"}  # their derivative jumps at z = 0


def activate(name: str, z: np.ndarray) -> np.ndarray:
    """The activation ``name`` of z, element by element."""
    return ACTIVATIONS[name][0](z)


def activation_slope(name: str, z: np.ndarray) -> np.ndarray:
    """Its derivative at z, element by element."""
    return ACTIVATIONS[name][1](z)


def near_kink(name: str, z: np.ndarray, margin: float) -> bool:
    """Whether some z lies within ``margin`` of where the activation bends, but not on it: a z
    of exactly 0 is one that no small step moves (a ReLU's zeros, added or pooled), as a max
    pool's exact ties are."""
    return name in KINKED and bool(((np.abs(z) < margin) & (z != 0)).any())
