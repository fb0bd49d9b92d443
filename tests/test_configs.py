"""irlvla_gym.configs: command-line flags generated from config dataclasses (and back), and presets; plus the
commands built with it: every flag users know parses to the config it always meant, and a command line without
flags gives the dataclass defaults (each default is written once, in the dataclass)."""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pytest

from irlvla_gym.configs import (
    Presets, add_arguments, comma_list, count_or_all, deep_merge, field_docs, from_args, from_mapping, merge_into,
    option,
)


@dataclass
class Inner:
    epochs: int = 3
    """passes over the data"""
    lr: float = 1e-3
    """step size (100% of it at the peak)"""


@dataclass
class Demo:
    data: str
    """input directory"""
    name: str = "x"
    """a name"""
    count: int | None = None
    """how many (default: all)"""
    scale: float = 0.5
    """a factor"""
    path: Path = Path("runs/demo")
    """where"""
    kind: Literal["a", "b"] = "a"
    """one of two"""
    keys: tuple[str, ...] = ("p", "q")
    """some keys"""
    size: tuple[int, int] = (4, 8)
    """height and width"""
    extra: dict[str, Any] = field(default_factory=dict)
    """JSON settings"""
    progress: bool = True
    """progress bars"""
    restart: bool = False
    """start over"""
    renders: int = option(6, flag="--renders", aliases=("-r",), renamed=("--num-pictures",))
    """pictures drawn"""
    scenes: int | None = option(100, type=count_or_all)
    """first N scenes (0: all)"""
    obs: tuple[str, ...] | None = option(None, type=comma_list)
    """comma-separated keys"""
    sets: list[str] = option(default_factory=list, flag="--set", action="append", metavar="KEY=VALUE")
    """overrides (repeatable)"""
    hidden: int = option(7, cli=False)
    """not on the command line"""
    inner: Inner = field(default_factory=Inner)


def _parser(cls=Demo) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="demo")
    add_arguments(p, cls)
    return p


def test_no_flags_give_the_dataclass_defaults():
    assert from_args(Demo, _parser().parse_args(["--data", "d"])) == Demo(data="d")


def test_every_kind_of_field_parses():
    args = _parser().parse_args([
        "--data", "d", "--name", "n", "--count", "5", "--scale", "2", "--path", "p/q", "--kind", "b", "--keys", "u",
        "v", "w", "--size", "1", "2", "--extra", '{"h": 96}', "--no-progress", "--restart", "-r", "9", "--scenes", "0",
        "--obs", "bev, ego", "--set", "a=1", "--set", "b.c=2", "--epochs", "5", "--lr", "0.1"])
    cfg = from_args(Demo, args)
    assert cfg == Demo(data="d", name="n", count=5, scale=2.0, path=Path("p/q"), kind="b", keys=("u", "v", "w"),
                       size=(1, 2), extra={"h": 96}, progress=False, restart=True, renders=9, scenes=None,
                       obs=("bev", "ego"), sets=["a=1", "b.c=2"], inner=Inner(epochs=5, lr=0.1))
    assert from_args(Demo, _parser().parse_args(["--data", "d", "--progress"])).progress is True
    assert from_args(Demo, args, name="override").name == "override"


def test_help_comes_from_the_field_docstrings():
    text = " ".join(_parser().format_help().split())
    assert "--data DATA input directory" in text
    assert "--scale SCALE a factor (default: 0.5)" in text
    assert "--count COUNT how many (default: all)" in text  # a text that names its default keeps it
    assert "step size (100% of it at the peak) (default: 0.001)" in text  # % is escaped for argparse
    assert "--renders RENDERS, -r RENDERS pictures drawn (default: 6)" in text
    assert "--progress, --no-progress progress bars (default: True)" in text
    assert "--kind {a,b}" in text and "--set KEY=VALUE overrides (repeatable)" in text
    assert "--hidden" not in text and "--num-pictures" not in text
    assert field_docs(Demo)["keys"] == "some keys" and "hidden" in field_docs(Demo)


def test_bad_values_and_renamed_flags_stop_with_a_clear_message(capsys):
    p = _parser()
    for argv, message in ((["--kind", "c"], "invalid choice"), (["--extra", "[1]"], "must be a JSON object"),
                          (["--extra", "{"], "not valid JSON"), (["--scenes", "-1"], "must be >= 0"),
                          (["--num-pictures", "3"], "--num-pictures was renamed to --renders"), ([], "--data")):
        with pytest.raises(SystemExit) as exc:
            p.parse_args(argv + ([] if not argv else ["--data", "d"]))
        assert exc.value.code == 2
        assert message in capsys.readouterr().err


def test_a_field_without_a_command_line_form_is_an_error():
    @dataclass
    class Bad:
        thing: object = None

    with pytest.raises(TypeError, match="Bad.thing"):
        _parser(Bad)


def test_positional_fields():
    @dataclass
    class Job:
        variant: str = option(positional=True)
        """which one"""
        seed: int = 0

    assert from_args(Job, _parser(Job).parse_args(["v", "--seed", "2"])) == Job("v", 2)


def test_from_mapping_and_merges():
    assert from_mapping(Demo, {"data": "d", "inner": {"epochs": 9}}) == Demo(data="d", inner=Inner(epochs=9))
    with pytest.raises(ValueError, match=r"unknown inner key\(s\) \['epoch'\]; valid: \['epochs', 'lr'\]"):
        from_mapping(Demo, {"data": "d", "inner": {"epoch": 9}})
    assert deep_merge({"a": {"b": 1, "c": 2}, "d": 1}, {"a": {"b": 3}}) == {"a": {"b": 3, "c": 2}, "d": 1}
    merged = merge_into(Demo(data="d", extra={"x": 1}), {"inner": {"lr": 0.5}, "extra": {"y": 2}, "name": "m"})
    assert merged == Demo(data="d", name="m", extra={"x": 1, "y": 2}, inner=Inner(lr=0.5))
    with pytest.raises(ValueError, match="unknown Demo field"):
        merge_into(Demo(data="d"), {"nope": 1})


def test_presets():
    presets = Presets("demo.yaml", {"quick": {"inner": {"epochs": 1}}, "full": None})
    assert list(presets) == ["quick", "full"] and presets["full"] == {}
    assert presets.apply(Demo(data="d"), "quick").inner.epochs == 1
    assert presets.apply({"inner": {"epochs": 3, "lr": 1}}, "quick") == {"inner": {"epochs": 1, "lr": 1}}
    assert presets.apply({"a": 1}, None) == {"a": 1}
    with pytest.raises(ValueError, match=r"demo.yaml has no preset 'huge' \(has \['full', 'quick'\]\)"):
        presets.apply({}, "huge")
    presets["tiny"] = {"name": "t"}
    assert presets.resolve("tiny") == {"name": "t"}
    with pytest.raises(TypeError, match="mapping of overrides"):
        presets["bad"] = 3  # type: ignore[assignment]


# ---- the irlvla commands built from configs -------------------------------------------------------------------------


def _parse(argv: list[str]) -> argparse.Namespace:
    from irlvla_gym.cli import build_parser

    return build_parser().parse_args(argv)


def _config_classes():
    from baselines.hacking.config import HackingConfig
    from baselines.runner import SweepJob, TableJob, TrainJob
    from irlvla_gym.leaderboard.runner import LeaderboardConfig
    from irlvla_gym.pipeline import PipelineConfig
    from irlvla_gym.policies.bc import BCConfig
    from reward_models.dataset import DatasetConfig
    from reward_models.evaluate import EvalConfig
    from reward_models.train import TrainRunConfig

    return [
        (["bc", "--out", "o"], BCConfig, {"out": "o"}),
        (["rwm", "dataset", "--out", "o"], DatasetConfig, {"out": "o"}),
        (["rwm", "train", "--data", "d", "--out", "o"], TrainRunConfig, {"data": "d", "out": "o"}),
        (["rwm", "eval", "--ckpt", "c", "--out", "o"], EvalConfig, {"ckpt": "c", "out": "o"}),
        (["leaderboard"], LeaderboardConfig, {}),
        (["pipeline"], PipelineConfig, {}),
        (["baselines", "run"], SweepJob, {}),
        (["baselines", "train", "ppo-vla-rwm"], TrainJob, {"variant": "ppo-vla-rwm"}),
        (["baselines", "table"], TableJob, {}),
        (["hacking", "run"], HackingConfig, {}),
    ]


@pytest.mark.parametrize("index", range(10))
def test_command_defaults_are_the_dataclass_defaults(index):
    argv, cls, required = _config_classes()[index]
    parsed = from_args(cls, _parse(argv))
    expected = cls(**required)
    if cls.__name__ == "LeaderboardConfig":  # the agents come back as a list from the command line
        parsed.agents = tuple(parsed.agents)
    assert parsed == expected


def test_known_flags_keep_their_meaning(tmp_path):
    from baselines.hacking.config import HackingConfig
    from baselines.runner import SweepJob, TrainJob
    from irlvla_gym.leaderboard.runner import LeaderboardConfig
    from irlvla_gym.policies.bc import BCConfig
    from reward_models.dataset import DatasetConfig
    from reward_models.evaluate import EvalConfig
    from reward_models.train import TrainRunConfig

    bc = from_args(BCConfig, _parse([
        "bc", "--out", "o", "--num-scenes", "0", "--obs-keys", "bev,ego", "--head", "diffusion", "--vla-config",
        '{"hidden": 96}', "--score-every", "0", "--no-tensorboard", "--no-progress", "--restart", "--init",
        "bc_default"]))
    assert (bc.num_scenes, bc.obs_keys, bc.head, bc.vla_config, bc.score_every, bc.tensorboard, bc.progress,
            bc.restart, bc.init) == (None, ("bev", "ego"), "diffusion", {"hidden": 96}, 1, False, False, True,
                                     "bc_default")
    assert _parse(["bc", "--out", "o", "--eval-only"]).eval_only

    ds = from_args(DatasetConfig, _parse(["rwm", "dataset", "--out", "o", "--candidates", "16", "--backend", "ray",
                                          "--shard-size", "8", "--start", "2", "--no-progress"]))
    assert (ds.candidates, ds.backend, ds.shard_size, ds.start, ds.progress) == (16, "ray", 8, 2, False)
    assert dataclasses.astuple(ds.candidate_config())[:4] == (16, 2, 2, 2)  # K / 8 per source when they do not fit

    tr = from_args(TrainRunConfig, _parse([
        "rwm", "train", "--data", "d", "--out", "o", "--epochs", "2", "--batch-scenes", "4", "--irl-weight", "0.3",
        "--d-model", "16", "--bev-tokens", "64", "--agent-forecast", "cv", "--max-minutes", "1.5", "--seed", "4"]))
    assert (tr.train.epochs, tr.train.batch_scenes, tr.train.irl_weight, tr.train.max_minutes, tr.train.seed) == (
        2, 4, 0.3, 1.5, 4)
    model = tr.model.model_config()
    assert (model.d_model, model.bev_tokens, model.agent_forecast) == (16, 64, "cv")

    ev = from_args(EvalConfig, _parse(["rwm", "eval", "--ckpt", "default", "--out", "o", "--num-scenes", "7",
                                       "--speed-scenes", "0", "--compare", "policy_aware"]))
    assert (ev.num_scenes, ev.speed_scenes, ev.compare) == (7, 0, "policy_aware")

    lb = from_args(LeaderboardConfig, _parse(["leaderboard", "--agents", "human", "pdm-closed", "--num-scenes", "0",
                                              "--two-stage", "--no-human-filter", "--traffic", "idm",
                                              "--out", str(tmp_path)]))
    assert (list(lb.agents), lb.num_scenes, lb.two_stage, lb.human_filter, lb.traffic, lb.out) == (
        ["human", "pdm-closed"], None, True, False, "idm", tmp_path)

    job = from_args(TrainJob, _parse(["baselines", "train", "ppo-vla-rwm", "--seed", "1", "--no-eval", "--set",
                                      "ppo.n_steps=16", "--timesteps", "64", "--num-scenes", "4", "--n-envs", "2",
                                      "--eval-scenes", "3", "--preset", "full"]))
    assert (job.variant, job.seed, job.evaluate, job.preset) == ("ppo-vla-rwm", 1, False, "full")
    assert job.overrides.as_list() == ["ppo.n_steps=16", "total_timesteps=64", "env.num_scenes=4",
                                       "eval.num_scenes=3", "n_envs=2"]
    run = job.run_config()
    assert (run.total_timesteps, run.n_envs, run.ppo.n_steps, run.env["num_scenes"], run.eval.num_scenes) == (
        64, 2, 16, 4, 3)

    sweep = from_args(SweepJob, _parse(["baselines", "run", "--variants", "ppo-vla-rwm", "--seeds", "3", "4"]))
    assert (sweep.variants, sweep.seeds) == (("ppo-vla-rwm",), (3, 4))

    hack = from_args(HackingConfig, _parse(["hacking", "run", "--preset", "full", "--remedies", "none", "refit",
                                            "--set", "n_envs=2", "--rwm-data-scenes", "8", "--workers", "2"]))
    assert (hack.preset, hack.remedies, hack.overrides, hack.rwm_data_scenes, hack.workers) == (
        "full", ("none", "refit"), ["n_envs=2"], 8, 2)
    assert hack.budget.run_preset == "full" and hack.budget.probe_every == 4096


def test_numeric_strings_become_numbers_for_numeric_fields():
    """YAML 1.1 reads ``1e-4`` as a string; a typed float/int field takes it as the number (--set overrides)."""
    from baselines.config import load_config

    cfg = load_config("ppo-vla-rwm", "quick", ["ppo.learning_rate=1e-4", "ppo.n_steps=1e2"])
    assert cfg.ppo.learning_rate == 1e-4 and isinstance(cfg.ppo.learning_rate, float)
    assert cfg.ppo.n_steps == 100 and isinstance(cfg.ppo.n_steps, int)
    with pytest.raises(ValueError, match="ppo.learning_rate: expected a number"):
        load_config("ppo-vla-rwm", "quick", ["ppo.learning_rate=fast"])
    with pytest.raises(ValueError, match="ppo.n_steps: expected an integer"):
        load_config("ppo-vla-rwm", "quick", ["ppo.n_steps=1.5"])


def test_float_or_none_reads_none_as_no_value():
    from irlvla_gym.configs import float_or_none

    assert float_or_none("none") is None and float_or_none("None") is None
    assert float_or_none("0.02") == 0.02 and float_or_none("0") == 0.0
