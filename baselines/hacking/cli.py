"""``irlvla hacking``: measure and counter reward hacking of PPO on the learned reward.

::

    irlvla hacking run --preset quick --out runs/hacking [--remedies none ensemble refit anchor] [--seeds 0]
                       [--rwm-data DIR] [--rwm-data-scenes N] [--set key.sub=value ...] [--workers 2]

Trains ppo-vla-rwm with each remedy off and on, probes the gap between the learned reward and the rule-based
EPDMS during training, evaluates the final policies and writes ``OUT/hacking.md`` and ``OUT/gap_curves.png``
(:mod:`baselines.hacking.experiment`). ``--set`` overrides the ppo-vla-rwm run config (as ``irlvla baselines``).
A rerun skips finished runs (``done.json``) and reuses the dataset and the ensemble.
"""

from __future__ import annotations

import argparse
from typing import Any

from baselines.hacking.config import HackingConfig
from irlvla_gym.configs import add_arguments, from_args


def _run(args: argparse.Namespace) -> int:
    from baselines.hacking.experiment import run_experiment

    files = run_experiment(from_args(HackingConfig, args))
    print(files["md"].read_text())
    for kind, path in files.items():
        print(f"{kind}: {path}")
    return 0


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("hacking", help="reward hacking of PPO on the learned reward: probe + remedies",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="hacking_command", metavar="ACTION")
    sub.required = True
    p = sub.add_parser("run", help="ppo-vla-rwm with each remedy off/on: gap curves + table")
    add_arguments(p, HackingConfig)  # one flag per field of the config
    p.set_defaults(func=_run)


__all__ = ["register"]
