"""Defenses of the three paradigms. Each module registers itself in DEFENSES; import it here (one line)."""
from ..registry import DEFENSES  # noqa: F401
from .base import Defense, DefenseError, DefenseOutput, Paradigm  # noqa: F401
from . import none  # noqa: F401
from . import training_time, test_time, training_free  # noqa: F401
from . import stack  # noqa: F401
