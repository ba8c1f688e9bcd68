"""The elementwise functions and losses of the generated modules, in forms that never
overflow.

* activations, each for a python float (one sample of the per-node code) or a numpy array:
  σ through e^−|z|, softplus through ``log1p``; each activation ``f`` has ``f_prime(z, a)``,
  its derivative written with a = f(z) where that saves work (σ′ = a(1 − a),
  tanh′ = 1 − a²), and ``f_backward(z, a, da)``, the per-layer code's ∂L/∂z = f′ · ∂L/∂a
  on arrays in as few passes as it takes (a new array: ∂L/∂a is another layer's);
  ``ACTIVATIONS`` names the choices of a generic g;
* losses, per sample: over a (K, B) array (per-layer code) or a list of K values, floats or
  arrays (B,) (per-node code); cross-entropy through log-sum-exp, finite for any finite
  logits; ``LOSSES`` names them.

Imports numpy and the standard library only. It shares no code with
``symbackprop.reference``, which checks it.
"""

from __future__ import annotations

import math

import numpy

_NUMBER = (int, float)  # one sample of the per-node code runs on python floats

# ---- elementwise functions: a float or an array -----------------------------------------------


def identity(z):
    return z


def identity_prime(z, a):
    return 1.0


def sigmoid(z):
    """1 / (1 + e^−z): far below 0, e^−z overflows to inf and σ is 0, as it should be (the
    exact value is below the smallest float); a float below −700 takes e^z / (1 + e^z), which
    never overflows (math.exp raises past 709.78), the others the one exp (30% quicker)."""
    if isinstance(z, _NUMBER):
        if z > -700.0:
            return 1 / (1 + math.exp(-z))
        e = math.exp(z)
        return e / (1 + e)
    e = numpy.negative(z)
    with numpy.errstate(over="ignore"):
        numpy.exp(e, out=e)
    e += 1.0
    return numpy.reciprocal(e, out=e)


def sigmoid_prime(z, a):
    prime = 1.0 - a
    prime *= a  # in place: one new array, not two
    return prime


def sigmoid_backward(z, a, da):
    """dL/dz = σ′(z) dL/da = a(1 − a) dL/da, a new array: three passes, one allocation."""
    d = 1.0 - a
    d *= a
    d *= da
    return d


def tanh(z):
    return math.tanh(z) if isinstance(z, _NUMBER) else numpy.tanh(z)


def tanh_prime(z, a):
    prime = -a
    prime *= a
    prime += 1.0  # in place: one new array, not two
    return prime


def tanh_backward(z, a, da):
    """dL/dz = (1 − a²) dL/da, a new array: three passes, one allocation."""
    d = numpy.multiply(a, a)
    numpy.subtract(1.0, d, out=d)
    d *= da
    return d


def relu(z):
    """max(z, 0); its derivative is 0 at z = 0, as PyTorch's."""
    return max(z, 0.0) if isinstance(z, _NUMBER) else numpy.maximum(z, 0.0)


def relu_prime(z, a):
    return float(z > 0) if isinstance(z, _NUMBER) else (z > 0).astype(z.dtype)


def relu_backward(z, a, da):
    """dL/dz = [z > 0] dL/da, a new array: two passes (0 at z = 0, as PyTorch)."""
    return numpy.multiply(da, z > 0)


def softplus(z):
    """log(1 + e^z) = max(z, 0) + log1p(e^−|z|): exact far out on both sides (4.2e-18 at −40)."""
    if isinstance(z, _NUMBER):
        return max(z, 0.0) + math.log1p(math.exp(-abs(z)))
    return numpy.maximum(z, 0.0) + numpy.log1p(numpy.exp(-numpy.abs(z)))


def softplus_prime(z, a):
    return sigmoid(z)


def softplus_backward(z, a, da):
    """dL/dz = σ(z) dL/da, a new array."""
    d = sigmoid(z)
    d *= da
    return d


LEAKY_RELU_SLOPE = 0.01  # PyTorch's default negative_slope


def leaky_relu(z):
    """z for z > 0, 0.01 z otherwise; the slope at z = 0, as PyTorch."""
    if isinstance(z, _NUMBER):
        return z if z > 0 else LEAKY_RELU_SLOPE * z
    return numpy.where(z > 0, z, LEAKY_RELU_SLOPE * z)


def leaky_relu_prime(z, a):
    if isinstance(z, _NUMBER):
        return 1.0 if z > 0 else LEAKY_RELU_SLOPE
    return numpy.where(z > 0, z.dtype.type(1), z.dtype.type(LEAKY_RELU_SLOPE))  # z's dtype


def leaky_relu_backward(z, a, da):
    """dL/dz = (1 for z > 0, else 0.01) dL/da, a new array in z's dtype."""
    d = numpy.where(z > 0, z.dtype.type(1), z.dtype.type(LEAKY_RELU_SLOPE))
    d *= da
    return d


def _max(*values):
    """A max pool's window in the per-node code: max() of floats, numpy.maximum of arrays."""
    if all(isinstance(v, _NUMBER) for v in values):
        return max(values)
    result = values[0]
    for value in values[1:]:
        result = numpy.maximum(result, value)
    return result


def _exp(z):
    return math.exp(z) if isinstance(z, _NUMBER) else numpy.exp(z)


def _log(z):
    return math.log(z) if isinstance(z, _NUMBER) else numpy.log(z)


# name -> (a = g(z), g'(z, a)): the choices for a generic activation g
ACTIVATIONS = {
    "identity": (identity, identity_prime),
    "sigmoid": (sigmoid, sigmoid_prime),
    "tanh": (tanh, tanh_prime),
    "relu": (relu, relu_prime),
    "softplus": (softplus, softplus_prime),
    "leaky_relu": (leaky_relu, leaky_relu_prime),
}


# ---- losses, per sample ------------------------------------------------------------------------
# a and y: a (K, B) array each, a column per sample (the per-layer code), or lists of K values,
# each a float or an array (B,) (the per-node code). A loss gives (B,) values, or one value; its
# gradient ∂L/∂a_k (K, B), or a list of K values. ``channels`` is the output's C: K for a vector;
# for a map of K = C·P values (channel, then pixel), cross_entropy takes a softmax over the C
# channels of each pixel and sums over the pixels (torch's on (N, C, H, W)); the others are
# elementwise and need not know.


def sse(a, y, channels):
    """½ Σ_k (a_k − y_k)²."""
    if isinstance(a, list):  # a loop: a generator's frames cost more than a few outputs
        total = 0.0
        for ak, yk in zip(a, y):
            total += (ak - yk) * (ak - yk)
        return 0.5 * total
    return 0.5 * ((a - y) ** 2).sum(axis=0)


def sse_gradient(a, y, channels):
    if isinstance(a, list):
        return [ak - yk for ak, yk in zip(a, y)]
    return a - y


def mse(a, y, channels):
    """(1/K) Σ_k (a_k − y_k)², PyTorch's MSELoss of one sample."""
    if isinstance(a, list):
        return sum((ak - yk) * (ak - yk) for ak, yk in zip(a, y)) / len(a)
    return ((a - y) ** 2).mean(axis=0)


def mse_gradient(a, y, channels):
    if isinstance(a, list):
        return [2 * (ak - yk) / len(a) for ak, yk in zip(a, y)]
    return 2 * (a - y) / len(a)


def cross_entropy(a, y, channels):
    """−Σ_k y_k log softmax(a)_k = −Σ_k y_k (a_k − log Σ_j e^{a_j}), PyTorch's
    CrossEntropyLoss with probability targets, the softmax over each pixel's channels for a
    map; log-sum-exp keeps it finite for any logits."""
    if isinstance(a, list):
        pixels = len(a) // channels
        total = 0.0
        for p in range(pixels):
            ap, yp = a[p::pixels], y[p::pixels]
            lse = _log_sum_exp_values(ap)
            total = total - sum(yk * (ak - lse) for ak, yk in zip(ap, yp))
        return total
    if channels == len(a):  # a vector: one softmax per sample
        return numpy.add.reduce(y * (_log_sum_exp(a) - a), axis=0)
    # a column per pixel and sample
    columns, targets = a.reshape(channels, -1), y.reshape(channels, -1)
    per_column = numpy.add.reduce(targets * (_log_sum_exp(columns) - columns), axis=0)
    return per_column.reshape(-1, a.shape[1]).sum(axis=0)


def cross_entropy_gradient(a, y, channels):
    """softmax(a)_k · Σ_j y_j − y_k over each pixel's channels (y need not sum to one)."""
    if isinstance(a, list):
        pixels = len(a) // channels
        gradient = [0.0] * len(a)
        for p in range(pixels):
            ap, yp = a[p::pixels], y[p::pixels]
            lse, total = _log_sum_exp_values(ap), sum(yp)
            gradient[p::pixels] = [_exp(ak - lse) * total - yk for ak, yk in zip(ap, yp)]
        return gradient
    columns, targets = a.reshape(channels, -1), y.reshape(channels, -1)
    softmax = numpy.exp(columns - _log_sum_exp(columns))
    return (softmax * numpy.add.reduce(targets, axis=0) - targets).reshape(a.shape)


def binary_cross_entropy(a, y, channels):
    """Σ_k softplus(a_k) − y_k a_k = Σ_k −y_k log σ(a_k) − (1 − y_k) log(1 − σ(a_k)), PyTorch's
    BCEWithLogitsLoss summed over the outputs: finite for any logits."""
    if isinstance(a, list):
        return sum(softplus(ak) - yk * ak for ak, yk in zip(a, y))
    return (softplus(a) - y * a).sum(axis=0)


def binary_cross_entropy_gradient(a, y, channels):
    """σ(a_k) − y_k."""
    if isinstance(a, list):
        return [sigmoid(ak) - yk for ak, yk in zip(a, y)]
    return sigmoid(a) - y


def _log_sum_exp(a):
    """log Σ_k e^{a_k} of each column, as a row (1, B): the largest a_k taken out first. (The
    ufuncs' own reductions, not the methods .max and .sum, which go through python: 4 µs
    less for a sample's value and gradient.)"""
    top = numpy.maximum.reduce(a, axis=0, keepdims=True)
    return top + numpy.log(numpy.add.reduce(numpy.exp(a - top), axis=0, keepdims=True))


def _log_sum_exp_values(a):
    top = _max(*a)
    return top + _log(sum(_exp(ak - top) for ak in a))


# The per-layer code's form of a concrete loss: values (B,) and gradient (K, B) of a (K, B)
# array at once, sharing their work — the same operations as the two functions apart.


def sse_and_gradient(a, y, channels):
    d = a - y
    return 0.5 * numpy.add.reduce(d * d, axis=0), d


def mse_and_gradient(a, y, channels):
    d = a - y
    return numpy.add.reduce(d * d, axis=0) / len(a), 2 * d / len(a)


def cross_entropy_and_gradient(a, y, channels):
    """log-sum-exp once for both (7 µs less for a sample of resnet_tiny)."""
    if channels != len(a):  # a map: a softmax per pixel
        return cross_entropy(a, y, channels), cross_entropy_gradient(a, y, channels)
    lse = _log_sum_exp(a)
    values = numpy.add.reduce(y * (lse - a), axis=0)
    return values, numpy.exp(a - lse) * numpy.add.reduce(y, axis=0) - y


def binary_cross_entropy_and_gradient(a, y, channels):
    return binary_cross_entropy(a, y, channels), binary_cross_entropy_gradient(a, y, channels)


LOSSES_AND_GRADIENTS = {
    "sse_and_gradient": sse_and_gradient,
    "mse_and_gradient": mse_and_gradient,
    "cross_entropy_and_gradient": cross_entropy_and_gradient,
    "binary_cross_entropy_and_gradient": binary_cross_entropy_and_gradient,
}


# name -> (L per sample, ∂L/∂a): the choices for a generic loss, and the concrete losses
LOSSES = {
    "sse": (sse, sse_gradient),
    "mse": (mse, mse_gradient),
    "cross_entropy": (cross_entropy, cross_entropy_gradient),
    "binary_cross_entropy": (binary_cross_entropy, binary_cross_entropy_gradient),
}

