"""Collection rules for the whole repository (tests/ and the package's doctests)."""

import importlib.util

# The jax backend's runtime imports jax at the top; without jax it is not collected for
# doctests, and tests/test_numeric_jax.py skips with the reason.
collect_ignore = [] if importlib.util.find_spec("jax") else ["symbackprop/numeric/runtime_jax.py"]
