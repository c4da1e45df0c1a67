"""`python -m demo.sweep`: a grid of `demo.eval` evaluations, one Ray task per cell, resumable.

Examples:

    python -m demo.sweep --models teaching --attacks pgd,autoattack --eps 1,4 --defenses all \\
        --modes adaptive --data world,world-held-out --n 200 --seed 0
    python -m demo.sweep --grid grid.toml --address ray://head:10001 --ship-code
    python -m demo.sweep --suite                 # the published evaluation (demo.eval.suite)
    python -m demo.sweep --suite --merge-only    # rebuild the merged output from the results folder

Every finished cell is saved at once under <out>/cells/, keyed by its configuration and the hash of the
weights it reads; rerunning the same command runs only what is missing. <out>/leaderboard.md and
leaderboard.json are merged from the results folder at the end (and by --merge-only).
"""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from .grid import GridError, cells as grid_cells, grid_from, read_toml, suite_cells

AXES = ("models", "attacks", "eps", "defenses", "modes", "data", "n", "seed", "batch_size", "steps", "alpha", "eot")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m demo.sweep", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    g = p.add_argument_group("grid (comma-separated lists; values given here override --grid)")
    g.add_argument("--grid", metavar="FILE.toml", help="read the axes from a TOML file (same names, e.g. attacks = [\"pgd\"])")
    g.add_argument("--suite", action="store_true", help="sweep the published evaluation (demo.eval.suite) instead")
    g.add_argument("--models", help="zoo keys or model ids (default teaching)")
    g.add_argument("--attacks", help="attack names (default pgd)")
    g.add_argument("--eps", help="budgets, in /255 for L-inf attacks (default 4); '' for each attack's default")
    g.add_argument("--defenses", help="'all' (default: one cell per registered defense), a list, or '' for none")
    g.add_argument("--group-defenses", action="store_true", default=None,
                   help="one cell with every defense instead of one cell per defense")
    g.add_argument("--modes", help="adaptive and/or oblivious (default adaptive)")
    g.add_argument("--data", help="world, world-held-out or folders (default world)")
    g.add_argument("--n", help="images per cell (default 500)")
    g.add_argument("--seed", help="attack and defense seed (default 0)")
    g.add_argument("--batch-size", dest="batch_size", help="default 50")
    g.add_argument("--steps", help="attack steps, for every attack that has them, or per attack: pgd=10,autoattack=100")
    g.add_argument("--alpha", help="step size, in the units of --eps")
    g.add_argument("--set", action="append", metavar="NAME=VALUE", help="any other attack parameter (repeatable)")
    g.add_argument("--eot", help="EOT draws per step for every randomized defense")
    g.add_argument("--targeted", action="store_true", default=None, help="targeted attacks")
    r = p.add_argument_group("running")
    r.add_argument("--name", help="sweep name (default: the TOML file's name, 'suite', or 'default')")
    r.add_argument("--out", help="results folder (default sweeps/<name>)")
    r.add_argument("--address", help="join this Ray cluster (e.g. auto, ray://head:10001); default: start a local one")
    r.add_argument("--num-cpus", type=int, help="CPUs of the local cluster (default: this machine's)")
    r.add_argument("--ship-code", action="store_true", help="upload this project to the cluster's workers (Ray working_dir)")
    r.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda when the cluster has GPUs")
    r.add_argument("--threads", type=int, default=1, help="CPU threads per cell (default 1; results depend on it)")
    r.add_argument("--gpus-per-cell", type=float, default=1.0, help="GPUs per cell on cuda; 0.5 puts two on a GPU")
    r.add_argument("--max-parallel", type=int, help="at most this many cells at once (default: what the cluster fits)")
    r.add_argument("--retries", type=int, default=2, help="attempts after a worker dies (default 2)")
    r.add_argument("--force", action="store_true", help="run every cell again, even those already stored")
    r.add_argument("--progress-every", type=float, default=30.0, help="seconds between progress lines (default 30)")
    r.add_argument("--dry-run", action="store_true", help="list the cells and which are stored; run nothing")
    r.add_argument("--merge-only", action="store_true", help="only rebuild leaderboard.md/json from the results folder")
    return p


def grid_spec(args: argparse.Namespace) -> tuple[dict, str]:
    """The grid dict (TOML values, then command-line ones) and the sweep's default name."""
    spec, name = {}, "default"
    if args.grid:
        spec = read_toml(args.grid)
        name = str(spec.pop("name", Path(args.grid).stem))
    for axis in AXES + ("group_defenses", "targeted"):
        if getattr(args, axis, None) is not None:
            spec[axis] = getattr(args, axis)
    if args.set:
        spec["set"] = args.set
    return spec, name


def main(argv: list[str] | None = None) -> int:
    """Run the command; returns the exit status (0: every cell finished). Bad grid input exits with 2."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    command = "python -m demo.sweep " + shlex.join(argv)
    if args.threads < 1 or args.retries < 0 or (args.max_parallel is not None and args.max_parallel < 1) \
            or args.gpus_per_cell <= 0:
        parser.error("--threads and --max-parallel must be >= 1, --retries >= 0, --gpus-per-cell > 0")
    try:
        if args.suite:
            if args.grid or any(getattr(args, a) is not None for a in AXES) or args.set:
                raise GridError("--suite takes the published grid as it is: leave out --grid and the grid options")
            name, skipped = "suite", suite_cells()[1]
        else:
            spec, name = grid_spec(args)
            grid = grid_from(spec)
            grid_cells(grid)  # every combination checked before anything starts
            skipped = []
    except GridError as exc:
        parser.error(str(exc))
    out = Path(args.out or Path("sweeps") / (args.name or name))

    from . import merge, runner, store

    if args.merge_only:
        try:
            summary = merge.merge(out)
        except FileNotFoundError as exc:
            parser.error(str(exc))
        print(f"wrote {out / 'leaderboard.md'} and {out / 'leaderboard.json'} ({summary['done']}/{summary['cells']} cells)")
        return 0 if summary["done"] == summary["cells"] else 1

    def build(device: str) -> list:
        return suite_cells(device)[0] if args.suite else grid_cells(grid, device)

    st = store.Store(out)
    if args.dry_run:
        device = args.device or "cpu"
        todo, done = runner.plan(build(device), st, args.threads, args.force)
        for status, entries in (("stored", done), ("to run", todo)):
            for cell, k, _ in entries:
                print(f"{status:7} {cell.name}.{k}: python -m demo.eval {shlex.join(cell.argv)}")
        print(f"{len(done)} stored, {len(todo)} to run (keys for device {device}, {args.threads} thread(s) per cell)")
        return 0
    try:
        cluster = runner.connect(args.address, args.num_cpus, args.ship_code)
    except runner.SweepError as exc:
        print(f"python -m demo.sweep: {exc}", file=sys.stderr)
        return 1
    try:
        device = args.device or ("cuda" if cluster["gpus"] > 0 else "cpu")
        if device == "cuda" and cluster["gpus"] <= 0:
            parser.error("--device cuda: the Ray cluster has no GPU")
        opts = runner.Options(threads=args.threads, gpus_per_cell=args.gpus_per_cell, max_parallel=args.max_parallel,
                              retries=args.retries, force=args.force, progress_every=args.progress_every)
        res, summary = runner.sweep(build(device), out, cluster, opts, command,
                                    "demo.eval.suite" if args.suite else grid.to_dict(), device, skipped)
    except KeyboardInterrupt:
        return 130
    finally:
        if cluster["started"]:
            runner.shutdown()
    rate = f", {res['cells_per_hour']:.0f} cells/hour" if res["cells_per_hour"] else ""
    print(f"ran {res['ran']} cell(s) in {res['seconds']:.0f} s on {res['slots']} slot(s){rate}; "
          f"{res['cached']} already stored; {len(res['failed'])} failed")
    if skipped:
        print("not part of a sweep (not demo.eval runs): " + ", ".join(skipped))
    print(f"wrote {out / 'leaderboard.md'} and {out / 'leaderboard.json'} ({summary['done']}/{summary['cells']} cells)")
    return 0 if summary["done"] == summary["cells"] else 1


if __name__ == "__main__":
    sys.exit(main())
