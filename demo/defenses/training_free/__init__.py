"""Training-free defenses: the model is left alone; the input or its embedding is changed."""
from . import ttc  # noqa: F401
from . import anti_adversary  # noqa: F401
from . import clipure  # noqa: F401
from . import jpeg  # noqa: F401
from . import bit_depth  # noqa: F401
from . import median  # noqa: F401
from . import random_resize_pad  # noqa: F401
