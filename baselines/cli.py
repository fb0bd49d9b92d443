"""``irlvla baselines``: train and evaluate the PPO baselines.

::

    irlvla baselines run --preset quick [--variants ppo-vla-rwm ...] [--seeds 0 1] [--out runs/baselines]
    irlvla baselines train ppo-vla-rwm [--config FILE.yaml] [--preset quick] --seed 0 [--out runs/baselines]
    irlvla baselines table [--out runs/baselines] [--variants ...] [--seeds 0 1]

``--set key.sub=value`` overrides any config entry (e.g. ``--set total_timesteps=20000 --set env.num_scenes=512``);
``--timesteps``, ``--num-scenes``, ``--eval-scenes`` and ``--n-envs`` are shortcuts. A rerun skips finished runs and
resumes interrupted ones from their last checkpoint (``--restart`` starts them over).
"""

from __future__ import annotations

import argparse
from typing import Any

from baselines.config import PRESETS, VARIANTS


def _overrides(args: argparse.Namespace) -> list[str]:
    out = list(args.set or [])
    if args.timesteps is not None:
        out.append(f"total_timesteps={args.timesteps}")
    if args.num_scenes is not None:
        out.append(f"env.num_scenes={args.num_scenes}")
    if args.eval_scenes is not None:
        out.append(f"eval.num_scenes={args.eval_scenes}")
    if args.n_envs is not None:
        out.append(f"n_envs={args.n_envs}")
    return out


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default="quick", choices=PRESETS, help="budget preset of the config files")
    p.add_argument("--out", default="runs/baselines", help="output root")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="config override (repeatable)")
    p.add_argument("--timesteps", type=int, default=None, help="env steps per run (total_timesteps)")
    p.add_argument("--num-scenes", type=int, default=None, help="training scene pool (env.num_scenes)")
    p.add_argument("--eval-scenes", type=int, default=None, help="evaluation scenes (eval.num_scenes)")
    p.add_argument("--n-envs", type=int, default=None, help="parallel envs")
    p.add_argument("--restart", action="store_true", help="start runs over instead of skipping / resuming")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("baselines", help="PPO baselines on identical envs (train, evaluate, table)",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="baselines_command", metavar="ACTION")
    sub.required = True

    p = sub.add_parser("run", help="train + evaluate every variant x seed, write the table and learning curves")
    _common(p)
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    p.set_defaults(func=_run)

    p = sub.add_parser("train", help="train + evaluate one variant x seed")
    p.add_argument("variant", help=f"one of {list(VARIANTS)} (or any name, with --config)")
    p.add_argument("--config", default=None, help="yaml config (default baselines/configs/<variant>.yaml)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-eval", action="store_true", help="skip the evaluation")
    _common(p)
    p.set_defaults(func=_train)

    p = sub.add_parser("table", help="(re)write the table and curves from finished runs")
    p.add_argument("--out", default="runs/baselines")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    p.set_defaults(func=_table)


def _run(args: argparse.Namespace) -> int:
    from baselines.runner import run_all

    paths = run_all(args.preset, args.variants, args.seeds, args.out, _overrides(args), not args.no_progress,
                    args.restart)
    for kind, path in paths.items():
        print(f"{kind}: {path}")
    return 0


def _train(args: argparse.Namespace) -> int:
    from baselines.config import load_config
    from baselines.runner import train_run

    cfg = load_config(args.config or args.variant, args.preset, _overrides(args))
    if args.config and cfg.variant != args.variant:
        cfg.variant = args.variant
    train_run(cfg, args.seed, args.out, not args.no_progress, evaluate=not args.no_eval, restart=args.restart)
    return 0


def _table(args: argparse.Namespace) -> int:
    from pathlib import Path

    from baselines.common import read_json
    from baselines.report import write_report

    refs_path = Path(args.out) / "references.json"
    refs = read_json(refs_path)["rows"] if refs_path.is_file() else {}
    write_report(args.out, args.variants, args.seeds, refs)
    return 0


__all__ = ["register"]
