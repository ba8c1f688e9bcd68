"""symbackprop: backpropagation derived symbolically, printed, compiled and verified.

>>> import symbackprop as sb
>>> d = sb.presets.article().derive()
>>> d.chain("W3")[0, 0]
a2_1*dL_da3_1*g_prime(z3_1)
"""

from . import presets
from .derivation import Derivation
from .errors import OverBudget, SpecError
from .network import Network
from .ops import (
    Activation,
    Add,
    AvgPool2D,
    BatchNorm1D,
    BatchNorm2D,
    Concat,
    Conv2D,
    ConvTranspose2D,
    Dense,
    GlobalAvgPool2D,
    Input,
    LeakyReLU,
    MaxPool2D,
    ReLU,
    Sigmoid,
    Softplus,
    Tanh,
    Upsample,
)
from .spec import load_spec
from .torch_bridge import from_torch, to_torch

__all__ = [
    "Activation", "Add", "AvgPool2D", "BatchNorm1D", "BatchNorm2D", "Concat", "Conv2D", "ConvTranspose2D", "Dense", "Derivation", "GlobalAvgPool2D",
    "Input", "LeakyReLU", "MaxPool2D", "Network", "OverBudget", "ReLU", "Sigmoid", "Softplus",
    "SpecError", "Tanh", "Upsample", "from_torch", "load_spec", "presets", "to_torch",
]
