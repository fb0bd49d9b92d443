"""``irlvla baselines``: train and evaluate the PPO baselines.

::

    irlvla baselines run --preset quick [--variants ppo-vla-rwm ...] [--seeds 0 1] [--out runs/baselines]
    irlvla baselines train ppo-vla-rwm [--config FILE.yaml] [--preset quick] --seed 0 [--out runs/baselines]
    irlvla baselines table [--out runs/baselines] [--variants ...] [--seeds 0 1]
    irlvla baselines compare [--out runs/baselines] [--baseline bc_default] [--sets synthetic-test synthetic-hard real]

``--set key.sub=value`` overrides any config entry (e.g. ``--set total_timesteps=20000 --set env.num_scenes=512``);
``--timesteps``, ``--num-scenes``, ``--eval-scenes`` and ``--n-envs`` are shortcuts. A rerun skips finished runs and
resumes interrupted ones from their last checkpoint (``--restart`` starts them over). ``compare`` is the evaluation
protocol for learning claims (baselines/protocol.py): paired per-scene differences to a named baseline with bootstrap
95% CIs over scenes and seeds, on synthetic-test, synthetic-hard (two-stage) and the real windows; its per-agent
results are reused on a rerun while their settings match.

Config files cannot run code on their own: ``hooks`` and ``plugin`` resolve registered names only unless
``--allow-import PREFIX`` allows a module; SB3 zips outside this project's own run directories need ``--trust-pickle``.
"""

from __future__ import annotations

import argparse
from typing import Any

from baselines.protocol import CompareJob
from baselines.runner import SweepJob, TableJob, TrainJob
from irlvla_gym.agents import TrustOptions, apply_trust_options
from irlvla_gym.configs import add_arguments, from_args


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("baselines", help="PPO baselines on identical envs (train, evaluate, table)",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="baselines_command", metavar="ACTION")
    sub.required = True
    # The flags of each action are the fields of its job config (baselines.runner), written once there.
    p = sub.add_parser("run", help="train + evaluate every variant x seed, write the table and learning curves")
    add_arguments(p, SweepJob)
    add_arguments(p, TrustOptions)
    p.set_defaults(func=_run)

    p = sub.add_parser("train", help="train + evaluate one variant x seed")
    add_arguments(p, TrainJob)
    add_arguments(p, TrustOptions)
    p.set_defaults(func=_train)

    p = sub.add_parser("table", help="(re)write the table and curves from finished runs")
    add_arguments(p, TableJob)
    p.set_defaults(func=_table)

    p = sub.add_parser("compare", help="evaluation protocol: paired deltas vs a baseline agent with bootstrap CIs "
                                       "on synthetic-test, synthetic-hard (two-stage) and the real windows")
    add_arguments(p, CompareJob)
    add_arguments(p, TrustOptions)
    p.set_defaults(func=_compare)


def _run(args: argparse.Namespace) -> int:
    from baselines.runner import run_sweep

    # The runner and its worker processes read the options from the environment (they load hooks, plug-ins, zips).
    apply_trust_options(from_args(TrustOptions, args))
    for kind, path in run_sweep(from_args(SweepJob, args)).items():
        print(f"{kind}: {path}")
    return 0


def _train(args: argparse.Namespace) -> int:
    from baselines.runner import run_train_job

    apply_trust_options(from_args(TrustOptions, args))
    run_train_job(from_args(TrainJob, args))
    return 0


def _table(args: argparse.Namespace) -> int:
    from baselines.runner import write_table

    write_table(from_args(TableJob, args))
    return 0


def _compare(args: argparse.Namespace) -> int:
    from baselines.protocol import run_compare

    apply_trust_options(from_args(TrustOptions, args))
    paths = run_compare(from_args(CompareJob, args))
    print(paths["md"].read_text())
    for kind, path in paths.items():
        print(f"{kind}: {path}")
    return 0


__all__ = ["register"]
