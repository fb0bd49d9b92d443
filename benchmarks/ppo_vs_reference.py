"""PPO wall time per 100k env steps of this checkout against a reference checkout, in the same run.

    git worktree add /tmp/ref ef39bdc       # e.g. main when the fast-teacher issue was filed
    python -m benchmarks.ppo_vs_reference --reference /tmp/ref [--variant ppo-vla-rwm] [--json]

Runs the user's command, ``irlvla baselines train VARIANT --preset quick --no-eval --timesteps T --num-scenes S``,
as a subprocess of each checkout (``PYTHONPATH`` = that checkout, ``cwd`` = it), alternating reference and this
checkout per configuration, each in a fresh output directory and a fresh ``IRLVLA_CACHE`` (so neither sees scene
stores or caches the other built). This checkout then runs once more with the cache of its first run: what every
later run on the same machine sees (the store the first run built of the training pool, the whole split's when the
pool is larger than the scene cache, else the pool's own, the per-scene caches filled beside it, and the hacking
probe's scenes and values).

Reported per configuration: each run's ``wall_s_per_100k_steps`` from its ``done.json`` (training only: the PPO
loop, env and update), the command's whole wall and CPU seconds (start-up, store build, model load included), and
the ratios reference / this checkout. Pools: ``--pools 256 2000`` (the quick preset's pool and the paper preset's).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import BenchResult, add_common_args, report

ROOT = Path(__file__).resolve().parents[1]


def run_train(tree: Path, variant: str, pool: int, timesteps: int, out: Path, cache: Path) -> dict[str, Any]:
    """One ``irlvla baselines train`` of checkout ``tree``: its ``done.json`` plus the command's wall / CPU seconds."""
    env = {**os.environ, "PYTHONPATH": str(tree), "IRLVLA_CACHE": str(cache), "OMP_NUM_THREADS": "1",
           "MKL_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "irlvla_gym.cli", "baselines", "train", variant, "--preset", "quick", "--no-eval",
           "--timesteps", str(timesteps), "--num-scenes", str(pool), "--out", str(out), "--no-progress"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"{tree}: {' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    done = json.loads(next(out.rglob("done.json")).read_text())
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"train_s_per_100k": float(done["wall_s_per_100k_steps"]), "env_ms_per_step": done.get("env_ms_per_step"),
            "command_wall_s": wall, "command_cpu_s": cpu, "steps": int(done["steps"])}


def compare(reference: Path, variant: str, pools: list[int], timesteps: int, work: Path) -> list[BenchResult]:
    """Rows of :func:`run_train` for each pool: reference, this checkout cold (fresh cache) and warm (its cache)."""
    rows: list[BenchResult] = []
    for pool in pools:
        ref = run_train(reference, variant, pool, timesteps, work / f"ref{pool}", work / f"cache-ref{pool}")
        cold = run_train(ROOT, variant, pool, timesteps, work / f"new{pool}", work / f"cache-new{pool}")
        warm = run_train(ROOT, variant, pool, timesteps, work / f"new{pool}-again", work / f"cache-new{pool}")
        for name, r in (("reference", ref), ("this checkout, fresh cache", cold),
                        ("this checkout, second run", warm)):
            note = (f"command {r['command_wall_s']:.0f} s wall / {r['command_cpu_s']:.0f} s CPU; "
                    f"env {r['env_ms_per_step']:.2f} ms/step; {r['steps']} steps")
            rows.append(BenchResult(f"{variant} pool {pool}: {name}, training wall per 100k steps",
                                    r["train_s_per_100k"], "s", note=note, extra=r))
        for name, r, goal in (("fresh cache", cold, None), ("second run", warm, 2.0)):
            ratio = ref["train_s_per_100k"] / r["train_s_per_100k"]
            rows.append(BenchResult(f"{variant} pool {pool}: reference / this checkout ({name})", ratio, "x",
                                    goal=f">= {goal}" if goal else "",
                                    passed=None if goal is None else ratio >= goal,
                                    note=f"whole command: x{ref['command_wall_s'] / r['command_wall_s']:.2f} wall"))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_common_args(parser)
    parser.add_argument("--reference", required=True, type=Path, help="a checkout of the reference commit")
    parser.add_argument("--variant", default="ppo-vla-rwm")
    parser.add_argument("--pools", type=int, nargs="+", default=[256, 2000], help="training scene pools")
    parser.add_argument("--timesteps", type=int, default=4096, help="env steps per run")
    parser.add_argument("--work", type=Path, default=None, help="output root (default: a temp dir, removed)")
    args = parser.parse_args(argv)
    if not (args.reference / "irlvla_gym").is_dir():
        parser.error(f"--reference {args.reference}: not a checkout of this project (no irlvla_gym/)")
    with tempfile.TemporaryDirectory(prefix="ppo-vs-ref-") as tmp:
        work = args.work or Path(tmp)
        rows = compare(args.reference.resolve(), args.variant, args.pools, args.timesteps, work)
    return report(f"PPO wall time per 100k env steps vs {args.reference}", rows, as_json=args.json,
                  meta={"variant": args.variant, "pools": args.pools, "timesteps": args.timesteps,
                        "reference": str(args.reference)})


if __name__ == "__main__":
    sys.exit(main())
