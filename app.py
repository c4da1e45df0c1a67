"""Adversarial attacks and defenses on CLIP: the interactive teaching app.

Run `python app.py [--model KEY] [--host 0.0.0.0] [--port 7860]`. The model defaults to $DEMO_MODEL,
else the embedded teaching model, so the app starts offline without touching the network.
"""
import argparse
import os

# Gradio's usage statistics and version check are network calls; classrooms may have no internet.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


def _args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="zoo key (teaching, vit-b-32, ...) or model id; default $DEMO_MODEL or teaching")
    parser.add_argument("--host", default=None, help="address to listen on (0.0.0.0 for a classroom network)")
    parser.add_argument("--port", type=int, default=None, help="port (default 7860)")
    return parser.parse_args(argv)


# The flags are read only when run as a script: importing this module (Spaces, tests) must not parse
# someone else's command line.
_ARGS = _args() if __name__ == "__main__" else None

from demo.ui import build_demo  # noqa: E402

demo = build_demo(model=_ARGS.model if _ARGS else None)

if __name__ == "__main__":
    demo.launch(server_name=_ARGS.host, server_port=_ARGS.port)
