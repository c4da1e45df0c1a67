"""Attacks. Each lives in its own module and registers itself in ATTACKS; import it here (one line)."""
from ..registry import ATTACKS  # noqa: F401
from .base import Attack, AttackError, AttackResult, quantize  # noqa: F401
