"""The ``irlvla`` command line. Each feature area registers its own subcommands (``register(subparsers)``).

A command's flags are the fields of its config dataclass (:func:`irlvla_gym.configs.add_arguments`: name, type,
default and help written once, in the dataclass) and its handler builds that config back
(:func:`irlvla_gym.configs.from_args`) and calls the typed entry point (``train_bc(BCConfig)``,
``run_train(TrainRunConfig)``, ``run_leaderboard(LeaderboardConfig)``, ...), which is also what
``irlvla pipeline`` calls. Building the parser imports no torch: heavy imports live inside the handlers."""

from __future__ import annotations

import argparse
import importlib
import sys

# Modules that add subcommands; each exposes ``register(subparsers)`` and sets ``func`` on its parsers.
SUBCOMMAND_MODULES = (
    "irlvla_gym.scenes.cli",
    "irlvla_gym.pipeline",
    "irlvla_gym.evaluation.score_cli",
    "irlvla_gym.evaluation.check_cli",
    "irlvla_gym.evaluation.video",
    "reward_models.cli",
    "irlvla_gym.policies.bc",
    "irlvla_gym.leaderboard.cli",
    "baselines.cli",
    "baselines.hacking.cli",
)


def build_parser() -> argparse.ArgumentParser:
    from irlvla_gym import __version__

    parser = argparse.ArgumentParser(prog="irlvla", description="IRL-VLA gym: scenes, scoring, reward model, baselines")
    parser.add_argument("--version", action="version", version=f"irlvla-gym {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from irlvla_gym.utils import limit_torch_threads

    limit_torch_threads()
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (FileNotFoundError, ValueError, ChildProcessError) as exc:  # user errors: one line, no traceback
        print(f"irlvla: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
