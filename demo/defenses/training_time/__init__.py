"""Training-time defenses: robustness trained into the weights (TeCoA, FARE, PMG-AFT) or the prompt (APT)."""
from . import tecoa  # noqa: F401
from . import fare  # noqa: F401
from . import pmg_aft  # noqa: F401
from . import apt  # noqa: F401
