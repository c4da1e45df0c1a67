"""What both load tests share: the app launched on 127.0.0.1, API clients, and result fingerprints."""
from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = ROOT / "assets" / "examples"
ENV = {"GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1",
       "NO_PROXY": "localhost,127.0.0.1", "no_proxy": "localhost,127.0.0.1"}
MAX_GROWTH = 0.10
# Outputs that carry wall-clock times ("Time per stage" chart and table) differ between any two runs;
# they are left out of the identity check.
TIMED_OUTPUT_PREFIX = "time"
IMAGE_SUFFIXES = (".png", ".webp", ".jpg", ".jpeg", ".gif", ".bmp")


# ------------------------------------------------------------------------------------------ server

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    raise RuntimeError(f"no VmRSS for process {pid}")


def start_server(model: str, port: int, log_path: Path) -> subprocess.Popen:
    env = dict(os.environ, **ENV)
    log = open(log_path, "w")
    # A session of its own, so that stopping the server also stops anything it started.
    return subprocess.Popen([sys.executable, "app.py", "--model", model, "--host", "127.0.0.1", "--port", str(port)],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def wait_ready(url: str, proc: subprocess.Popen, timeout: float) -> float:
    start = time.monotonic()
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # localhost: never through a proxy
    while time.monotonic() - start < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"the app exited with status {proc.returncode} before it was ready")
        try:
            with opener.open(url, timeout=5) as response:
                if response.status == 200:
                    return time.monotonic() - start
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"the app was not ready after {timeout:.0f} s")


def stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def make_client(url: str, downloads: Path):
    from gradio_client import Client

    # A slow machine can take longer than the client's default 5 s to answer; the run's deadline bounds it all.
    return Client(url, verbose=False, analytics_enabled=False, download_files=str(downloads),
                  httpx_kwargs={"timeout": 600.0})


# ------------------------------------------------------------------------------------ fingerprints

def _strip_times(value):
    if isinstance(value, dict):
        return {k: _strip_times(v) for k, v in value.items() if k != "ms"}
    if isinstance(value, list):
        return [_strip_times(v) for v in value]
    return value


def _file_digest(path: Path) -> str:
    if path.suffix.lower() in IMAGE_SUFFIXES:
        import numpy as np
        from PIL import Image

        with Image.open(path) as im:
            return "pixels:" + hashlib.sha256(np.asarray(im.convert("RGB")).tobytes()).hexdigest()
    if path.suffix.lower() == ".json":
        data = _strip_times(json.loads(path.read_text(encoding="utf-8")))
        return "json:" + hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()
    return "bytes:" + hashlib.sha256(path.read_bytes()).hexdigest()


def fingerprint(value):
    """A value with every downloaded file replaced by a digest of its content (pixels, JSON minus times)."""
    if isinstance(value, dict):
        return {k: fingerprint(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [fingerprint(v) for v in value]
    if isinstance(value, str) and len(value) < 4096 and os.path.isabs(value) and os.path.isfile(value):
        return _file_digest(Path(value))
    return value


def result_digest(outputs, labels: list[str]) -> dict[str, object]:
    return {f"{i}:{label}": fingerprint(v) for i, (label, v) in enumerate(zip(labels, outputs))
            if not str(label).lower().startswith(TIMED_OUTPUT_PREFIX)}
