"""symbackprop: backpropagation derived symbolically, printed, compiled and verified.

>>> import symbackprop as sb
>>> d = sb.presets.article().derive()
>>> d.chain("W3")[0, 0]
a2_1*dL_da3_1*g_prime(z3_1)
"""

from . import presets
from .derive import Derivation
from .errors import SpecError
from .layers import Conv2D, Dense
from .network import Network
from .spec import load_spec

__all__ = ["Conv2D", "Dense", "Derivation", "Network", "SpecError", "load_spec", "presets"]
