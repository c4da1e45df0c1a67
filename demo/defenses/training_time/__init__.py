"""Training-time defenses: robustness trained into the weights (TeCoA, FARE, PMG-AFT) or the prompts (APT, FAP)."""
from . import tecoa  # noqa: F401
from . import fare  # noqa: F401
from . import pmg_aft  # noqa: F401
from . import apt  # noqa: F401
from . import fap  # noqa: F401
