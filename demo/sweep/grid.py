"""The grid of a sweep: its axes (from the command line or a TOML file) and the cells they expand to.

A cell is one `python -m demo.eval` command line (`Cell.argv`); its `EvalConfig` is built by
`demo.eval`'s own parser, so a cell computes exactly what that command computes alone. The published
evaluation (`demo.eval.runs.RUNS`) can be swept as it is (`suite_cells`).
"""
from __future__ import annotations

import itertools
import math
import shlex
import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

MODES = ("adaptive", "oblivious")
WORLD_DATA = {"world": "seen", "world-held-out": "held_out"}
# Attack names as the published run names spell them (`published._RUN`: pgd4_main_seen, aa4_...).
RUN_PREFIX = {"pgd": "pgd", "autoattack": "aa"}


class GridError(ValueError):
    """Bad grid input: an unknown axis value, a parameter no attack takes, a malformed TOML file."""


@dataclass
class Grid:
    """The axes of a sweep; every combination of models x attacks x eps x data x modes x defense
    groups is one cell. `steps`, `alpha` and `sets` apply to every attack of the grid that takes them;
    `steps` may also be per attack ({"pgd": 10})."""

    models: list[str] = field(default_factory=lambda: ["teaching"])
    attacks: list[str] = field(default_factory=lambda: ["pgd"])
    eps: list[float | None] = field(default_factory=lambda: [4.0])
    defenses: list[str] = field(default_factory=lambda: ["all"])
    group_defenses: bool = False
    modes: list[str] = field(default_factory=lambda: ["adaptive"])
    data: list[str] = field(default_factory=lambda: ["world"])
    n: int = 500
    seed: int = 0
    batch_size: int = 50
    steps: int | dict[str, int] | None = None
    alpha: float | None = None
    sets: dict[str, str] = field(default_factory=dict)
    eot: int | None = None
    targeted: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Cell:
    """One evaluation: a readable unique `name`, the `demo.eval` arguments, and `run`, its name in the
    published convention (`pgd4_tecoa_seen`) when it has one, for the merged leaderboard."""

    name: str
    argv: tuple[str, ...]
    model: str
    run: str | None = None


def _names(value, what: str) -> list:
    if isinstance(value, str):
        value = [s.strip() for s in value.split(",") if s.strip()]
    if not isinstance(value, list) or not value:
        raise GridError(f"{what}: expected a non-empty list or comma-separated string, got {value!r}")
    return value


def _number(text, what: str) -> float:
    try:
        x = float(text)
    except (TypeError, ValueError):
        raise GridError(f"{what}: {text!r} is not a number") from None
    if not math.isfinite(x) or x < 0:
        raise GridError(f"{what}: {text!r} must be a finite number >= 0")
    return x


def _integer(value, what: str, low: int) -> int:
    try:
        x = int(value)
    except (TypeError, ValueError):
        raise GridError(f"{what}: {value!r} is not an integer") from None
    if x != float(value) or x < low:
        raise GridError(f"{what}: {value!r} must be an integer >= {low}")
    return x


def _pairs(value, what: str) -> dict:
    """NAME=VALUE pairs from a TOML table, a list of "NAME=VALUE" or a comma-separated string of them."""
    if isinstance(value, dict):
        return {str(k): v for k, v in value.items()}
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not all(isinstance(i, str) and "=" in i for i in items):
        raise GridError(f"{what}: expected NAME=VALUE pairs, got {value!r}")
    return {k.strip(): v.strip() for k, _, v in (i.partition("=") for i in items)}


def grid_from(spec: dict) -> Grid:
    """A validated Grid from a dict of axis values (TOML table or command-line values; None = default).

    Raises:
        GridError: an unknown key or value.
    """
    known = {f.name for f in fields(Grid)} | {"set"}
    unknown = sorted(set(spec) - known)
    if unknown:
        raise GridError(f"unknown grid key(s) {', '.join(unknown)}; valid: {', '.join(sorted(known - {'sets'}))}")
    spec = {("sets" if k == "set" else k): v for k, v in spec.items() if v is not None}
    g = Grid(**{k: v for k, v in spec.items() if k in {"n", "seed", "batch_size", "targeted", "group_defenses"}})
    g.models = [str(m) for m in _names(spec.get("models", g.models), "models")]
    g.attacks = [str(a) for a in _names(spec.get("attacks", g.attacks), "attacks")]
    eps = spec.get("eps", g.eps)
    g.eps = [None] if eps in ("", []) else [_number(e, "eps") for e in _names(eps, "eps")]
    defenses = spec.get("defenses", g.defenses)
    g.defenses = [] if defenses in ("", []) else [str(d) for d in _names(defenses, "defenses")]
    g.modes = [str(m) for m in _names(spec.get("modes", g.modes), "modes")]
    g.data = [str(d) for d in _names(spec.get("data", g.data), "data")]
    g.n = _integer(g.n, "n", 1)
    g.seed = _integer(g.seed, "seed", 0)
    g.batch_size = _integer(g.batch_size, "batch_size", 1)
    steps = spec.get("steps")
    if isinstance(steps, dict) or (isinstance(steps, str) and "=" in steps):
        g.steps = {k: _integer(v, f"steps for {k}", 1) for k, v in _pairs(steps, "steps").items()}
    elif steps is not None:
        g.steps = _integer(steps, "steps", 1)
    g.alpha = None if spec.get("alpha") is None else _number(spec["alpha"], "alpha")
    g.sets = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in _pairs(spec.get("sets", {}), "set").items()}
    if spec.get("eot") is not None:
        g.eot = _integer(spec["eot"], "eot", 1)
    for flag in ("targeted", "group_defenses"):
        if not isinstance(getattr(g, flag), bool):
            raise GridError(f"{flag}: expected true or false, got {getattr(g, flag)!r}")
    _validate(g)
    return g


def read_toml(path: str | Path) -> dict:
    """The grid table of a TOML file (top-level keys, or a [grid] table)."""
    try:
        data = tomllib.loads(Path(path).read_text())
    except FileNotFoundError:
        raise GridError(f"--grid {path}: no such file") from None
    except tomllib.TOMLDecodeError as exc:
        raise GridError(f"--grid {path}: not valid TOML: {exc}") from None
    table = data.get("grid", data)
    if not isinstance(table, dict):
        raise GridError(f"--grid {path}: [grid] must be a table")
    return dict(table)


def _validate(g: Grid) -> None:
    from ..attacks import ATTACKS
    from ..defenses import DEFENSES
    from ..models.zoo import spec_for

    for m in g.models:
        try:
            spec_for(m)
        except ValueError as exc:
            raise GridError(str(exc)) from None
    for a in g.attacks:
        if a not in ATTACKS:
            raise GridError(f"unknown attack {a!r}; choose from: {', '.join(ATTACKS.names())}")
    if isinstance(g.steps, dict) and set(g.steps) - set(g.attacks):
        raise GridError(f"steps given for attacks not in the grid: {', '.join(sorted(set(g.steps) - set(g.attacks)))}")
    if g.defenses != ["all"]:
        for d in g.defenses:
            if d not in DEFENSES:
                raise GridError(f"unknown defense {d!r}; choose from: all, {', '.join(DEFENSES.names())}")
    for m in g.modes:
        if m not in MODES:
            raise GridError(f"unknown mode {m!r}; choose from: {', '.join(MODES)}")
    for d in g.data:
        if d not in WORLD_DATA and not Path(d).is_dir():
            raise GridError(f"data {d!r}: not 'world', 'world-held-out' or an existing folder")
    for axis in ("models", "attacks", "eps", "defenses", "modes", "data"):
        values = getattr(g, axis)
        if len(set(values)) != len(values):
            raise GridError(f"{axis}: a value is listed twice ({', '.join(map(str, values))})")
    for name in list(g.sets) + (["alpha"] if g.alpha is not None else []):
        if not any(name in _param_names(a) for a in g.attacks):
            raise GridError(f"no attack of the grid takes {name!r} ({', '.join(g.attacks)})")


def _param_names(attack: str) -> set[str]:
    from ..attacks import ATTACKS

    return {f.name for f in ATTACKS.get(attack).params()}


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(float(x))


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "-" for c in text).strip("-") or "x"


def cells(g: Grid, device: str | None = None) -> list[Cell]:
    """Every cell of the grid, in a fixed order; `device` is added to each command line when given.

    Raises:
        GridError: a combination `demo.eval` refuses (e.g. an eps for an attack without one).
    """
    from ..defenses import DEFENSES

    defenses = DEFENSES.names() if g.defenses == ["all"] else list(g.defenses)
    groups = [defenses] if g.group_defenses or not defenses else [[d] for d in defenses]
    out = []
    for model, attack, eps, data, mode, group in itertools.product(g.models, g.attacks, g.eps, g.data, g.modes, groups):
        takes = _param_names(attack)
        argv = ["--model", model, "--attack", attack] + (["--eps", _fmt(eps)] if eps is not None else [])
        steps = g.steps.get(attack) if isinstance(g.steps, dict) else g.steps
        if steps is not None and "steps" in takes:
            argv += ["--steps", str(steps)]
        if g.alpha is not None and "alpha" in takes:
            argv += ["--alpha", _fmt(g.alpha)]
        argv += [x for k, v in g.sets.items() if k in takes for x in ("--set", f"{k}={v}")]
        argv += ["--n", str(g.n), "--seed", str(g.seed), "--batch-size", str(g.batch_size), "--data", data]
        argv += ["--defenses", ",".join(group)] if group else []
        argv += (["--adaptive"] if mode == "adaptive" else []) + (["--targeted"] if g.targeted else [])
        argv += (["--eot", str(g.eot)] if g.eot is not None else []) + (["--device", device] if device else [])
        label = "undefended" if not group else (group[0] if len(group) == 1 else "group")
        prefix, split = RUN_PREFIX.get(attack), WORLD_DATA.get(data)
        run = None
        if prefix and split and eps is not None and float(eps).is_integer() and not g.targeted:
            run = f"{prefix}{_fmt(eps)}_{label}_{split}"
        eps_text = "" if eps is None else _fmt(eps)
        name = "__".join(_safe(p) for p in (model, f"{attack}{eps_text}", label, split or data, mode))
        out.append(Cell(name, tuple(argv), model, run))
    check(out)
    return out


def suite_cells(device: str | None = None) -> tuple[list[Cell], list[str]]:
    """The published evaluation (`demo.eval.runs.RUNS`) as cells named like its runs, and the names of
    the runs that are not `demo.eval` commands (the sanity checks), which a sweep leaves out."""
    from ..eval.runs import RUNS

    out, skipped = [], []
    for name, command in RUNS.items():
        words = shlex.split(command)
        if words[:3] != ["python", "-m", "demo.eval"]:
            skipped.append(name)
            continue
        argv, rest = [], words[3:]
        while rest:
            word = rest.pop(0)
            if word == "--out":  # a sweep writes into its own folder
                rest.pop(0)
            else:
                argv.append(word)
        model = argv[argv.index("--model") + 1] if "--model" in argv else "teaching"
        out.append(Cell(name, tuple(argv + (["--device", device] if device else [])), model, name))
    check(out)
    return out, skipped


def check(cell_list: list[Cell]) -> None:
    """Build every cell's EvalConfig once, so that a bad combination fails before anything runs.

    Raises:
        GridError: naming the cell and what `demo.eval` said.
    """
    names = [c.name for c in cell_list]
    if len(set(names)) != len(names):
        raise GridError("two cells of the grid have the same name")
    for c in cell_list:
        try:
            config(c)
        except GridError:
            raise
        except (ValueError, KeyError) as exc:  # EvalError, UnknownNameError
            raise GridError(f"cell {c.name}: {exc}") from None


def config(cell: Cell):
    """The EvalConfig of a cell, built exactly as `python -m demo.eval <argv>` builds it."""
    from ..eval.__main__ import build_parser, config_from_args

    parser = build_parser()
    try:
        args = parser.parse_args(list(cell.argv))
    except SystemExit:
        raise GridError(f"cell {cell.name}: demo.eval refuses {shlex.join(cell.argv)}") from None
    return config_from_args(args)
