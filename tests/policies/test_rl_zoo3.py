"""rl-zoo3 smoke tests: every ``python -m rl_zoo3...`` command written in the repo parses with rl-zoo3's own
argument parser, loses nothing to rl-zoo3's env_kwargs replacement, and runs with a tiny budget (train, save,
``rl_zoo3.enjoy``).

The commands run as subprocesses in a temporary directory with the repository root on ``PYTHONPATH`` (so
``--gym-packages irlvla_gym`` imports this checkout); the tiny budget is appended to the documented argv (argparse
keeps the last value of an option), together with a 4-scene ``--env-kwargs`` computed the way rl-zoo3 would.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("rl_zoo3")

REPO_ROOT = Path(__file__).resolve().parents[2]
DOC_DIRS = ("irlvla_gym", "baselines", "reward_models", "benchmarks", "docs")
"""Where commands are written (plus the top-level README.md); tests/ is left out (it builds commands itself)."""
COMMAND_START = "python -m rl_zoo3."
TINY_SCENES = 4
TINY_HYPERPARAMS = {"ppo": ["n_envs:1", "n_steps:64", "batch_size:64", "n_epochs:2"]}
"""Per algorithm: overrides that make one rollout / update cheap (other algorithms: ``n_envs:1`` only)."""
TINY_TIMESTEPS = 128


def _documented_files() -> list[Path]:
    files = [REPO_ROOT / "README.md"]
    for name in DOC_DIRS:
        folder = REPO_ROOT / name
        if folder.is_dir():
            files += sorted(p for ext in ("md", "yml", "yaml", "py") for p in folder.rglob(f"*.{ext}"))
    return [f for f in files if f.is_file()]


def _uncomment(text: str) -> str:
    """Drop the ``#`` comment markers at line starts (yml headers, python comments)."""
    return re.sub(r"(?m)^[ \t]*#[ \t]?", "", text)


def extract_commands(text: str) -> list[str]:
    """Every rl-zoo3 command in ``text``: inline code runs to its closing backtick (it may wrap lines); a command
    outside backticks runs to the end of its line, following backslash continuations."""
    text = _uncomment(text)
    commands = []
    for match in re.finditer(re.escape(COMMAND_START), text):
        start = match.start()
        line_start = text.rfind("\n", 0, start) + 1
        if text.count("`", line_start, start) % 2 == 1:
            end = text.find("`", start)
            command = text[start:end if end >= 0 else len(text)]
        else:
            command, rest = "", text[start:]
            for line in rest.split("\n"):
                command += line.rstrip().removesuffix("\\") + " "
                if not line.rstrip().endswith("\\"):
                    break
        commands.append(" ".join(command.split()))
    return commands


def documented_commands() -> list[tuple[str, str]]:
    """(file relative to the repo, command) for every rl-zoo3 command written in the repo."""
    found = []
    for path in _documented_files():
        text = path.read_text(errors="replace")
        if COMMAND_START in text:
            found += [(str(path.relative_to(REPO_ROOT)), c) for c in extract_commands(text)]
    return found


class _Parsed(Exception):
    def __init__(self, namespace: argparse.Namespace):
        super().__init__("parsed")
        self.namespace = namespace


def parse_with_rl_zoo3(command: str, monkeypatch) -> tuple[str, argparse.Namespace]:
    """(``train`` or ``enjoy``, the namespace rl-zoo3's own parser gives for ``command``); stops before running."""
    argv = shlex.split(command)
    assert argv[:2] == ["python", "-m"], command
    module = argv[2]
    assert module in ("rl_zoo3.train", "rl_zoo3.enjoy"), f"unknown rl-zoo3 entry point in {command!r}"
    original = argparse.ArgumentParser.parse_args

    def capture(parser, args=None, namespace=None):
        raise _Parsed(original(parser, argv[3:], namespace))

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", capture)
    entry = module.rpartition(".")[2]
    with pytest.raises(_Parsed) as parsed:
        getattr(importlib.import_module(module), entry)()
    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", original)
    return entry, parsed.value.namespace


def section_of(args: argparse.Namespace) -> dict:
    """The hyperparameter section rl-zoo3 reads for ``args`` (its ``-conf`` file, entry ``args.env``)."""
    import yaml

    assert args.conf_file, "a documented train command names its hyperparameter file (-conf)"
    path = REPO_ROOT / args.conf_file
    assert path.is_file(), f"-conf {args.conf_file} does not exist (commands run from the repository root)"
    sections = yaml.safe_load(path.read_text())
    assert args.env in sections, f"{args.conf_file} has no section for {args.env}"
    return sections[args.env]


def effective_env_kwargs(args: argparse.Namespace, section: dict) -> dict:
    """env_kwargs as rl-zoo3 builds them: ``--env-kwargs`` replaces the file's dict (no merge)."""
    if args.env_kwargs and "env_kwargs" in section:
        return dict(args.env_kwargs)
    return dict(section.get("env_kwargs") or args.env_kwargs or {})


def _tiny_argv(command: str, args: argparse.Namespace, section: dict, log_folder: Path) -> list[str]:
    argv = shlex.split(command)
    argv[0] = sys.executable
    conf = argv.index("-conf") if "-conf" in argv else argv.index("--conf-file")
    argv[conf + 1] = str(REPO_ROOT / args.conf_file)
    env_kwargs = {**effective_env_kwargs(args, section), "num_scenes": TINY_SCENES}
    hyperparams = [f"{k}:{v!r}" for k, v in (args.hyperparams or {}).items()]
    hyperparams += TINY_HYPERPARAMS.get(args.algo, ["n_envs:1"])
    return [*argv, "-n", str(TINY_TIMESTEPS), "-f", str(log_folder), "--seed", "0",
            "--env-kwargs", *[f"{k}:{v!r}" for k, v in env_kwargs.items()], "--hyperparams", *hyperparams]


def run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]),
               IRLVLA_NUM_THREADS="1", OMP_NUM_THREADS="1")
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{shlex.join(argv)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


COMMANDS = documented_commands()


def test_commands_are_documented():
    """The shipped files document train and enjoy commands for every algorithm and the VLA file."""
    text = " ".join(c for _, c in COMMANDS)
    for algo in ("ppo", "a2c", "sac", "td3", "dqn"):
        assert f"-conf irlvla_gym/policies/rl_zoo3/{algo}.yml" in text
        assert f"rl_zoo3.enjoy --algo {algo} --env IRLVLA-Navsim-Residual-v2" in text
    assert "-conf irlvla_gym/policies/rl_zoo3_vla.yml" in text


@pytest.mark.parametrize("where, command", COMMANDS, ids=[f"{w}:{i}" for i, (w, _) in enumerate(COMMANDS)])
def test_documented_command_parses(where, command, monkeypatch):
    """rl-zoo3's parser accepts it, the env id is registered by ``--gym-packages irlvla_gym``, the hyperparameter
    section exists, and a given ``--env-kwargs`` repeats every entry of the file's env_kwargs it would drop."""
    import gymnasium as gym

    entry, args = parse_with_rl_zoo3(command, monkeypatch)
    assert "irlvla_gym" in (args.gym_packages or []), f"{where}: {command!r} lacks --gym-packages irlvla_gym"
    importlib.import_module("irlvla_gym")
    assert args.env in gym.registry, f"{where}: {args.env} is not a registered id"
    if entry == "enjoy":
        return
    section = section_of(args)
    kwargs = effective_env_kwargs(args, section)
    lost = set(section.get("env_kwargs") or {}) - set(kwargs) - {"num_scenes"}
    assert not lost, f"{where}: rl-zoo3 replaces env_kwargs with --env-kwargs, {sorted(lost)} would be lost"
    env = gym.make(args.env, **{**kwargs, "num_scenes": 2})
    if args.algo == "dqn":
        assert isinstance(env.action_space, gym.spaces.Discrete), f"{where}: DQN needs action_type vocabulary"
    env.close()


def _train_commands() -> list[str]:
    return sorted({c for _, c in COMMANDS if c.startswith("python -m rl_zoo3.train")})


@pytest.mark.timeout(300)
def test_documented_train_commands_run_tiny(tmp_path, monkeypatch):
    """Every documented train command trains 128 steps on 4 scenes and saves its model; PPO on the residual env
    (the first command of ppo.yml) is then run with ``rl_zoo3.enjoy``, as documented, for 8 steps."""
    for i, command in enumerate(_train_commands()):
        _, args = parse_with_rl_zoo3(command, monkeypatch)
        log_folder = tmp_path / f"logs{i}"
        run(_tiny_argv(command, args, section_of(args), log_folder), cwd=tmp_path)
        saved = sorted(log_folder.glob(f"{args.algo}/{args.env}_*/{args.env}.zip"))
        assert saved, f"{command!r} saved no model under {log_folder}"
        if args.algo == "ppo" and args.env == "IRLVLA-Navsim-Residual-v2":
            ppo_logs = log_folder
    enjoy = next(c for _, c in COMMANDS
                 if c.startswith("python -m rl_zoo3.enjoy --algo ppo --env IRLVLA-Navsim-Residual-v2"))
    argv = [sys.executable, *shlex.split(enjoy)[1:]]
    done = run([*argv, "-f", str(ppo_logs), "-n", "8", "--no-render"], cwd=tmp_path)
    assert "Episode Reward" in done.stdout
