import pkgutil
import subprocess
import sys
from pathlib import Path

import demo

ROOT = Path(__file__).resolve().parents[1]


def test_core_does_not_import_gradio():
    code = (
        "import sys, demo, demo.attacks, demo.defenses, demo.models.loading, demo.eval, demo.world\n"
        "import importlib, pkgutil\n"
        "for m in pkgutil.walk_packages(demo.__path__, 'demo.'):\n"
        "    if not m.name.startswith('demo.ui') and not m.name.endswith('__main__'):\n"
        "        importlib.import_module(m.name)\n"
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
            if m.ispkg or leaf.startswith("_") or leaf in {"base", "twin", "prompt_learner", "input_transform", "embedding_pgd"}:
                continue
            assert m.name in registered, f"{m.name} defines no registered attack or defense"
