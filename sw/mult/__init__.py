"""Multiplier families: bit-exact reference models named by spec strings.

>>> from mixpe.sw.mult import multiplier
>>> multiplier("exact:n=4").mul(-8, 7).item()
-56
"""

from . import families  # noqa: F401  (registers every family)
from .base import Multiplier, OperandFormat, multiplier, replace  # noqa: F401
