"""Adversarial attacks and defenses on CLIP: the interactive teaching app.

Run `python app.py [--model KEY] [--host 0.0.0.0] [--port 7860]`. The model defaults to $DEMO_MODEL, else
ViT-B/32 when its weights are already in the local Hugging Face cache, else the embedded teaching model,
so the app starts without waiting on the network.
"""
# ZeroGPU Spaces: `spaces` patches torch's CUDA when imported, so it must come before anything imports
# torch. Elsewhere, where it is installed, it changes nothing.
try:
    import spaces  # noqa: F401
except ImportError:
    spaces = None

import argparse  # noqa: E402
import os  # noqa: E402

# Gradio's usage statistics and version check are network calls; classrooms may have no internet.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


def _args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="zoo key (teaching, vit-b-32, ...) or model id; default $DEMO_MODEL, "
                                        "else vit-b-32 when its weights are cached, else teaching")
    parser.add_argument("--host", default=None, help="address to listen on (0.0.0.0 for a classroom network)")
    parser.add_argument("--port", type=int, default=None, help="port (default 7860)")
    return parser.parse_args(argv)


# The flags are read only when run as a script: importing this module (Spaces, tests) must not parse
# someone else's command line.
_ARGS = _args() if __name__ == "__main__" else None

from demo.ui import build_demo  # noqa: E402
from demo.ui import models, zerogpu  # noqa: E402

if zerogpu.on_zerogpu():
    # Models reach ZeroGPU's workers only when moved to "cuda" here, in the main thread, before launch.
    models.preload(models.startup_key(_ARGS.model if _ARGS else None))

demo = build_demo(model=_ARGS.model if _ARGS else None)

if __name__ == "__main__":
    demo.launch(server_name=_ARGS.host, server_port=_ARGS.port)
