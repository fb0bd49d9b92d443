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

from baselines.hacking import PRESET_NAMES, REMEDIES


def _run(args: argparse.Namespace) -> int:
    from baselines.hacking.experiment import run_experiment

    files = run_experiment(args.preset, args.out, args.remedies, args.seeds, args.rwm_data, args.rwm_data_scenes,
                           args.set or [], args.workers, not args.no_progress)
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
    p.add_argument("--preset", default="quick", choices=PRESET_NAMES)
    p.add_argument("--out", default="runs/hacking", help="output root")
    p.add_argument("--remedies", nargs="+", default=list(REMEDIES), choices=REMEDIES)
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--rwm-data", default=None, help="an RWM dataset directory (default: build OUT/rwm_data)")
    p.add_argument("--rwm-data-scenes", type=int, default=None, help="scenes of the RWM dataset (build / use)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="ppo-vla-rwm config override (repeatable)")
    p.add_argument("--workers", type=int, default=1, help="processes building the RWM dataset")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_run)


__all__ = ["register"]
