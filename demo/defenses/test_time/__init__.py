"""test-time defenses."""
from . import tpt  # noqa: F401
from . import rtpt  # noqa: F401
from . import tapt  # noqa: F401
