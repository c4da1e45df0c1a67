"""The procedural teaching world used to train and evaluate the embedded teaching model."""
from .render import (  # noqa: F401
    BACKGROUNDS,
    CLASSNAMES,
    COLOR_NAMES,
    EVAL_TEMPLATE,
    HELD_OUT,
    HELD_OUT_CLASSES,
    SEEN_CLASSES,
    SHAPES,
    SIZES,
    Scenes,
    caption_match,
    captions,
    make_batch,
    off_palette_hues,
    render,
    sample_scenes,
)
