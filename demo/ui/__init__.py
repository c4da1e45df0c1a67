"""The Gradio app (the only package that imports gradio): page layout, events and their handlers."""
from .layout import build_demo  # noqa: F401
