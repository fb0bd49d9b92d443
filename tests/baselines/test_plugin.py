"""Plug-in algorithms train on the baselines' identical env and land on the same table."""

import sys
from pathlib import Path

import pytest

from baselines.config import RunConfig, load_config
from baselines.report import collect_rows
from baselines.runner import train_run

PLUGIN_PKG = Path(__file__).resolve().parents[1] / "plugin_pkg"

TINY = dict(total_timesteps=16, eval={"split": "synthetic-test", "num_scenes": 2},
            env={"split": "synthetic-train", "num_scenes": 2, "obs_keys": ["ego"]})


def test_plugin_callable_trains_on_the_run_env_and_is_evaluated(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(PLUGIN_PKG))
    monkeypatch.setenv("IRLVLA_ALLOW_IMPORT", "irlvla_demo_plugin")  # a module:attr plug-in needs the allow-list
    sys.modules.pop("irlvla_demo_plugin", None)
    cfg = RunConfig(variant="demo-fit", algorithm="plugin", plugin="irlvla_demo_plugin:train_speed_fit",
                    policy="cnn", pretrained=None, **TINY)
    done = train_run(cfg, seed=0, out=tmp_path, progress=False)
    assert done["plugin"] == "irlvla_demo_plugin:train_speed_fit"
    assert done["steps"] == 16 and done["env_s"] > 0
    assert 0.0 <= done["eval"]["epdms"] <= 1.0 and done["eval"]["scenes"] == 2
    rows = collect_rows(tmp_path, ["demo-fit"], [0], references={})
    assert rows[0]["agent"] == "demo-fit" and rows[0]["seeds"] == 1


def test_sb3_plugin_saves_its_model(tmp_path):
    cfg = load_config("plugin-a2c", "quick", ["total_timesteps=16", "env.num_scenes=2", "eval.num_scenes=2",
                                              "plugin_kwargs.n_steps=4"])
    done = train_run(cfg, seed=0, out=tmp_path, progress=False)
    assert (tmp_path / "plugin-a2c" / "seed0" / "model.zip").is_file()
    assert done["eval"]["scenes"] == 2


def test_plugin_needs_a_spec():
    with pytest.raises(ValueError, match="plugin"):
        RunConfig(variant="x", algorithm="plugin")
