import pkgutil
import subprocess
import sys
from pathlib import Path

import demo

ROOT = Path(__file__).resolve().parents[1]


def test_core_does_not_import_gradio():
    # Import every core module by file path (walk_packages would import demo.ui while walking).
    modules = sorted(
        ".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for p in (ROOT / "demo").rglob("*.py")
        if "ui" not in p.relative_to(ROOT / "demo").parts and p.name != "__main__.py"
    )
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "assert 'gradio' not in sys.modules, 'the core imported gradio'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_only_ui_mentions_gradio():
    for path in (ROOT / "demo").rglob("*.py"):
        if "ui" in path.relative_to(ROOT / "demo").parts:
            continue
        assert "import gradio" not in path.read_text(), path


def test_every_attack_and_defense_module_registers_something():
    import demo.attacks
    import demo.defenses
    from demo.registry import ATTACKS, DEFENSES

    registered = {c.__module__ for c in (ATTACKS.get(n) for n in ATTACKS)} | {
        c.__module__ for c in (DEFENSES.get(n) for n in DEFENSES)}
    for pkg in (demo.attacks, demo.defenses):
        for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + "."):
            leaf = m.name.rsplit(".", 1)[-1]
            if m.ispkg or leaf.startswith("_") or leaf in {"base", "twin", "prompt_learner", "maple", "input_transform", "text_cache"}:
                continue
            assert m.name in registered, f"{m.name} defines no registered attack or defense"
