"""``irlvla leaderboard``: evaluate agents on the first N scenes of a split and write leaderboard.md / .csv / .json.

Agents (``--agents``, any mix): built-in names (human, constant-velocity, stand-still, pdm-closed), shipped VLA
checkpoints (bc_default, ...), names registered by installed plug-ins (entry-point group ``irlvla_gym.agents``),
trained models (every training command's ``model.zip``, which carries its env settings in ``model.irlvla.json``, or
its run directory; ``--trust-pickle`` for SB3-policy zips, which SB3 unpickles; a VLA run's zip loads its safetensors
``network/`` without), ``package.module:attr`` specs.
``--list`` shows every name that resolves. ``--two-stage`` runs NAVSIM v2's two-stage pseudo-simulation (meant for
synthetic-hard).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(subparsers) -> None:
    from irlvla_gym.configs import add_arguments
    from irlvla_gym.leaderboard.runner import LeaderboardConfig

    p = subparsers.add_parser("leaderboard", help="EPDMS leaderboard of agents on a fixed scene list",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p, LeaderboardConfig)  # one flag per field (its docstring is the help)
    p.add_argument("--list", action="store_true", help="list the agent and algorithm names that resolve, then exit")
    p.set_defaults(func=_main)


def _list() -> int:
    from irlvla_gym.agents import available_agents, available_algorithms

    print("agents:")
    for name, where in available_agents().items():
        print(f"  {name:24s} {where}")
    print("  (also: a trained model's model.zip or run directory, package.module:attr)")
    print("algorithms:")
    for name, where in available_algorithms().items():
        print(f"  {name:24s} {where}")
    return 0


def default_out(split: str, two_stage: bool) -> Path:
    """``runs/leaderboard/<split name>[-two-stage]``: where a run without ``--out`` writes."""
    split_name = Path(split).name if Path(split).is_dir() else split
    return Path("runs/leaderboard") / (split_name + ("-two-stage" if two_stage else ""))


def _main(args: argparse.Namespace) -> int:
    from irlvla_gym.agents import AgentSpecError
    from irlvla_gym.configs import from_args
    from irlvla_gym.leaderboard.report import terminal_table
    from irlvla_gym.leaderboard.runner import LeaderboardConfig, MissingExtraError, run_leaderboard

    if args.list:
        return _list()
    try:
        cfg = from_args(LeaderboardConfig, args)
        if cfg.out is None:
            cfg.out = default_out(cfg.split, cfg.two_stage)
        result = run_leaderboard(cfg)
    except (MissingExtraError, AgentSpecError) as exc:
        print(f"irlvla leaderboard: error: {exc}", file=sys.stderr)
        return 2
    print(terminal_table(result.rows, cfg.two_stage))
    for row in result.rows:
        if row["errors"]:
            print(f"{row['agent']}: {row['errors']} failed plan call(s), first: {row['error_messages'][0]}")
    print(f"wall time {result.wall_seconds:.1f} s; written: " + ", ".join(str(p) for p in result.paths.values()))
    return 0
