"""``irlvla baselines``: train and evaluate the PPO baselines.

::

    irlvla baselines run --preset quick [--variants ppo-vla-rwm ...] [--seeds 0 1] [--out runs/baselines]
    irlvla baselines train ppo-vla-rwm [--config FILE.yaml] [--preset quick] --seed 0 [--out runs/baselines]
    irlvla baselines train ppo-vla-rwm --backend ray --num-workers 8 [--ray-address HOST:PORT]
    irlvla baselines table [--out runs/baselines] [--variants ...] [--seeds 0 1]
    irlvla baselines compare [--out runs/baselines] [--baseline bc_default] [--sets synthetic-test synthetic-hard real]
    irlvla baselines interpolate ppo-vla-rwm-greedy [--out runs/baselines] [--alphas 0.25 0.5 0.75] [--base bc_default]
    irlvla baselines lolo [--variants ppo-vla-epdms ppo-vla-rwm] [--preset paper] [--seeds 0] [--out runs/lolo]

``--set key.sub=value`` overrides any config entry (e.g. ``--set total_timesteps=20000 --set env.num_scenes=512``);
``--timesteps``, ``--num-scenes``, ``--eval-scenes`` and ``--n-envs`` are shortcuts. A rerun skips finished runs and
resumes interrupted ones from their last checkpoint (``--restart`` starts them over). ``compare`` is the evaluation
protocol for learning claims (baselines/protocol.py): paired per-scene differences to a named baseline with bootstrap
95% CIs over scenes and seeds, on synthetic-test, synthetic-hard (two-stage) and the real windows; its per-agent
results are reused on a rerun while their settings match. ``interpolate`` mixes finished VLA runs back towards the
network they started from in weight space (WiSE-FT, baselines/interpolate.py): new runs ``<variant>-wise<100 alpha>``
that ``compare`` evaluates like any other. ``lolo`` trains on the real windows of all drives but one and scores each
drive with the runs that never saw it (baselines/lolo.py): RL on real data, evaluated on an unseen drive.

``train --backend ray --num-workers N`` steps the run's ``n_envs`` envs on N Ray actors (irlvla_gym.envs.ray_vector:
same numbers as the local native env), on the cluster of ``--ray-address`` / ``$RAY_ADDRESS`` (``ray start``), else on
a local Ray instance; the learner stays in this process.

Config files cannot run code on their own: ``hooks`` and ``plugin`` resolve registered names only unless
``--allow-import PREFIX`` allows a module; SB3 zips outside this project's own run directories need ``--trust-pickle``.
"""

from __future__ import annotations

import argparse
from typing import Any

import os
from dataclasses import dataclass
from typing import Literal

from baselines.interpolate import InterpolateJob
from baselines.lolo import LoloJob
from baselines.protocol import CompareJob
from baselines.runner import SweepJob, TableJob, TrainJob
from irlvla_gym.agents import TrustOptions, apply_trust_options
from irlvla_gym.configs import add_arguments, from_args, option

BACKEND_ENV, WORKERS_ENV = "IRLVLA_VEC_BACKEND", "IRLVLA_RAY_WORKERS"
"""What baselines.envs.make_sb3_vec_env reads (its BACKEND_ENV / WORKERS_ENV; not imported: that module loads SB3)."""


@dataclass
class ScaleOptions:
    """Where the training envs run (each field is a flag of ``irlvla baselines train``; no part of a run's config:
    the backend changes the speed, not the numbers)."""

    backend: Literal["local", "ray"] = option("local", choices=("local", "ray"))
    """local: the config's vec_env in this process; ray: the native env sharded over Ray actors (RayVecEnv)"""
    num_workers: int = 2
    """Ray actors stepping the envs (backend ray; each reserves 1 Ray CPU; n_envs is split between them)"""
    ray_address: str | None = None
    """Ray cluster to join (default $RAY_ADDRESS; neither: start a local Ray instance)"""

    def __post_init__(self) -> None:
        if self.backend not in ("local", "ray"):
            raise ValueError(f"--backend must be 'local' or 'ray', got {self.backend!r}")
        if int(self.num_workers) < 1:
            raise ValueError(f"--num-workers must be >= 1, got {self.num_workers}")


def apply_scale_options(options: ScaleOptions) -> None:
    """Export ``options`` to this process's environment, where the runner's VecEnv factory reads them
    (``IRLVLA_VEC_BACKEND``, ``IRLVLA_RAY_WORKERS``, ``RAY_ADDRESS``)."""
    os.environ[BACKEND_ENV] = options.backend
    os.environ[WORKERS_ENV] = str(int(options.num_workers))
    if options.ray_address:
        os.environ["RAY_ADDRESS"] = options.ray_address


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("baselines", help="PPO baselines on identical envs (train, evaluate, table)",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="baselines_command", metavar="ACTION")
    sub.required = True
    # The flags of each action are the fields of its job config (baselines.runner etc.), written once there.
    actions = (
        ("run", "train + evaluate every variant x seed, write the table and learning curves",
         (SweepJob, TrustOptions), _run),
        ("train", "train + evaluate one variant x seed", (TrainJob, TrustOptions, ScaleOptions), _train),
        ("table", "(re)write the table and curves from finished runs", (TableJob,), _table),
        ("compare", "evaluation protocol: paired deltas vs a baseline agent with bootstrap CIs on synthetic-test, "
                    "synthetic-hard (two-stage) and the real windows", (CompareJob, TrustOptions), _compare),
        ("interpolate", "WiSE-FT: finished VLA runs mixed with their starting network in weight space, written as "
                        "new runs (<variant>-wise<100 alpha>)", (InterpolateJob,), _interpolate),
        ("lolo", "leave-one-log-out RL on the real windows: train on the other drives, score each drive with the "
                 "runs that never saw it", (LoloJob, TrustOptions), _lolo),
    )
    for name, text, jobs, func in actions:
        p = sub.add_parser(name, help=text)
        for job in jobs:
            add_arguments(p, job)
        p.set_defaults(func=func)


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
    apply_scale_options(from_args(ScaleOptions, args))  # read where the runner makes its VecEnv
    run_train_job(from_args(TrainJob, args))
    return 0


def _table(args: argparse.Namespace) -> int:
    from baselines.runner import write_table

    write_table(from_args(TableJob, args))
    return 0


def _compare(args: argparse.Namespace) -> int:
    from baselines.protocol import run_compare

    apply_trust_options(from_args(TrustOptions, args))
    return _print_tables(run_compare(from_args(CompareJob, args)))


def _interpolate(args: argparse.Namespace) -> int:
    from baselines.interpolate import run_interpolate

    result = run_interpolate(from_args(InterpolateJob, args))
    print(f"{len(result['written'])} run(s) written, {len(result['skipped'])} up to date")
    return 0


def _lolo(args: argparse.Namespace) -> int:
    from baselines.lolo import run_lolo

    apply_trust_options(from_args(TrustOptions, args))
    return _print_tables(run_lolo(from_args(LoloJob, args)))


def _print_tables(paths: dict) -> int:
    """Print a written markdown table, then every written file's path (compare, lolo)."""
    print(paths["md"].read_text())
    for kind, path in paths.items():
        print(f"{kind}: {path}")
    return 0


__all__ = ["ScaleOptions", "apply_scale_options", "register"]
