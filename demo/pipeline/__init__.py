"""What the app does with one request, as plain library calls (no UI): check the input, run the clean
prediction, the attack and one defense per paradigm, and the robustness curve."""
from .compare import COLUMN_KEYS, DEFAULT_DEFENSES, PARADIGMS, check_request, classify, run_comparison, run_defenses  # noqa: F401
from .curve import UNDEFENDED, CurvePoint, CurveResult, robustness_curve  # noqa: F401
from .inputs import (  # noqa: F401
    MAX_DECODE_PIXELS,
    MAX_LABEL_CHARS,
    MAX_LABELS,
    MAX_WORKING_SIDE,
    USER_ERRORS,
    InputError,
    check_labels,
    describe_preprocessing,
    load_image,
    make_attack,
    from_uint8,
    make_defense,
    to_model_input,
    to_uint8,
)
from .results import Column, ComparisonResult, Stage  # noqa: F401
from .request import ADAPTIVE, MODES, OBLIVIOUS, Request, curve_request, run_request  # noqa: F401
from ..attacks import AttackSpec  # noqa: F401
