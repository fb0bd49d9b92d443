"""``irlvla leaderboard``: evaluate agents on the first N scenes of a split and write leaderboard.md / .csv / .json.

Agents (``--agents``, any mix): built-in names (human, constant-velocity, pdm-closed), names registered by installed
plug-ins (entry-point group ``irlvla_gym.agents``), SB3 model ``.zip`` paths, ``package.module:attr`` specs.
``--list`` shows every name that resolves. ``--two-stage`` runs NAVSIM v2's two-stage pseudo-simulation (meant for
synthetic-hard).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(subparsers) -> None:
    p = subparsers.add_parser("leaderboard", help="EPDMS leaderboard of agents on a fixed scene list",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--split", default="synthetic-test", help="synthetic split or scene-store directory "
                   "(default: synthetic-test)")
    p.add_argument("--agents", nargs="+", default=["human", "constant-velocity", "pdm-closed"],
                   help="agent specs (default: human constant-velocity pdm-closed)")
    p.add_argument("--num-scenes", type=int, default=100, help="first N scenes of the split (default: 100; "
                   "0 = all)")
    p.add_argument("--two-stage", action="store_true", help="two-stage pseudo-simulation (stage-2 scenes around "
                   "the stage-1 endpoints)")
    p.add_argument("--out", default=None, help="output directory (default: runs/leaderboard/<split>[-two-stage])")
    p.add_argument("--backend", choices=("local", "ray"), default="local", help="local processes or Ray")
    p.add_argument("--workers", type=int, default=1, help="parallel workers (default: 1)")
    p.add_argument("--seed", type=int, default=0, help="base seed of the per-scene tasks (default: 0)")
    p.add_argument("--traffic", choices=("log", "idm"), default="log", help="agents: log replay or reactive IDM")
    p.add_argument("--no-human-filter", action="store_true", help="switch NAVSIM v2's human filter off")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("--list", action="store_true", help="list the agent and algorithm names that resolve, then exit")
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    from irlvla_gym.agents import AgentSpecError, available_agents, available_algorithms
    from irlvla_gym.leaderboard.report import markdown_table
    from irlvla_gym.leaderboard.runner import LeaderboardConfig, MissingExtraError, run_leaderboard

    if args.list:
        print("agents:")
        for name, where in available_agents().items():
            print(f"  {name:24s} {where}")
        print("  (also: path/to/model.zip, package.module:attr)")
        print("algorithms:")
        for name, where in available_algorithms().items():
            print(f"  {name:24s} {where}")
        return 0
    split_name = Path(args.split).name if Path(args.split).is_dir() else args.split
    out = Path(args.out) if args.out else Path("runs/leaderboard") / (split_name + ("-two-stage" if args.two_stage
                                                                                      else ""))
    try:
        cfg = LeaderboardConfig(split=args.split, agents=tuple(args.agents),
                                num_scenes=args.num_scenes or None, two_stage=args.two_stage,
                                backend=args.backend, workers=args.workers, seed=args.seed, traffic=args.traffic,
                                human_filter=not args.no_human_filter, out=out, progress=not args.no_progress)
        result = run_leaderboard(cfg)
    except (MissingExtraError, AgentSpecError) as exc:
        print(f"irlvla leaderboard: error: {exc}", file=sys.stderr)
        return 2
    print(markdown_table(result.rows, cfg.two_stage))
    for row in result.rows:
        if row["errors"]:
            print(f"{row['agent']}: {row['errors']} failed plan call(s), first: {row['error_messages'][0]}")
    print(f"wall time {result.wall_seconds:.1f} s; written: " + ", ".join(str(p) for p in result.paths.values()))
    return 0
