"""Files the page shows: label presets, teaching text and example images, all read from `assets/`."""
from __future__ import annotations

import functools
from pathlib import Path

ASSETS = Path(__file__).resolve().parents[2] / "assets"
PRESETS_DIR = ASSETS / "presets"
CONTENT_DIR = ASSETS / "content"
EXAMPLES_DIR = ASSETS / "examples"
TEACHING_PRESET = "teaching_world"


def _read_list(path: Path) -> tuple[str, list[str]]:
    """A preset file: an optional '# Title' first line, then one label per line."""
    title, labels = path.stem.replace("_", " ").capitalize(), []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line.startswith("#"):
            title = line.lstrip("#").strip() or title
        elif line:
            labels.append(line)
    return title, labels


@functools.lru_cache(maxsize=1)
def presets() -> dict[str, tuple[str, tuple[str, ...]]]:
    """preset id -> (title, labels), in file-name order."""
    out = {}
    for path in sorted(PRESETS_DIR.glob("*.txt")):
        title, labels = _read_list(path)
        out[path.stem] = (title, tuple(labels))
    return out


def preset_text(preset_id: str) -> str:
    return "\n".join(presets()[preset_id][1])


@functools.lru_cache(maxsize=None)
def content(name: str) -> str:
    path = CONTENT_DIR / f"{name}.md"
    return path.read_text(encoding="utf-8") if path.is_file() else ""


def sections(name: str) -> list[tuple[str, str]]:
    """Split a markdown file on its '## ' headings: [(heading, body)]."""
    parts, title, body = [], None, []
    for line in content(name).splitlines():
        if line.startswith("## "):
            if title is not None:
                parts.append((title, "\n".join(body).strip()))
            title, body = line[3:].strip(), []
        elif title is not None:
            body.append(line)
    if title is not None:
        parts.append((title, "\n".join(body).strip()))
    return parts


def example_class(path) -> str | None:
    """The class an example image shows, when `path` is one of the examples: a teaching-world example's
    colour and shape (from its name), a photo-like example's first label. None for any other image."""
    if not path:
        return None
    path = Path(path)
    if path.parent.resolve() != EXAMPLES_DIR.resolve() or path.suffix != ".png":
        return None
    kind, _, rest = path.stem.partition("_")
    if kind == "teaching":
        return rest.removesuffix("_held-out").replace("_", " ")
    labels_file = path.with_suffix(".txt")
    if kind == "photo" and labels_file.is_file():
        names = _read_list(labels_file)[1]
        return names[0] if names else None
    return None


def examples(kind: str) -> list[tuple[str, str, str]]:
    """Example images of one kind ("teaching" or "photo"): (path, caption, labels text).

    Each image may have a same-named .txt next to it holding its candidate labels; teaching-world
    images use the teaching world's preset.
    """
    out = []
    for path in sorted(EXAMPLES_DIR.glob(f"{kind}_*.png")):
        caption = path.stem[len(kind) + 1:].replace("_", " ")
        labels_file = path.with_suffix(".txt")
        if labels_file.is_file():
            labels = "\n".join(_read_list(labels_file)[1])
        elif TEACHING_PRESET in presets():
            labels = preset_text(TEACHING_PRESET)
        else:
            labels = ""
        out.append((str(path), caption, labels))
    return out
