"""Attacks. Each lives in its own module and registers itself in ATTACKS; import it here (one line)."""
from ..registry import ATTACKS  # noqa: F401
from .base import Attack, AttackError, AttackResult, quantize, step_for_budget  # noqa: F401
from ._spec import AttackSpec, build_attack, follow_budget, to_display, to_pixels  # noqa: F401
from . import fgsm  # noqa: F401
from . import pgd  # noqa: F401
from . import pgd_l2  # noqa: F401
from . import cw  # noqa: F401
from . import apgd_ce  # noqa: F401
from . import apgd_dlr  # noqa: F401
from . import embedding_pgd  # noqa: F401
from . import autoattack  # noqa: F401
from . import noise  # noqa: F401
