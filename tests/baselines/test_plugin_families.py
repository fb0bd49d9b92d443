"""One shipped plug-in config per algorithm family trains through the runner on a tiny budget and is evaluated like
every variant: off-policy (plugin-sac), value-based (plugin-dqn). The on-policy one (plugin-a2c) and the callable
family (a ``train(env_fn, budget, seed)`` function: tests/plugin_pkg's ``demo-fit``) are tests/baselines/
test_plugin.py's."""

from __future__ import annotations

import json

import pytest

from baselines.config import load_config
from baselines.runner import train_run

TINY = [{"total_timesteps": 128, "env": {"num_scenes": 4}, "eval": {"split": "synthetic-val", "num_scenes": 4},
         "checkpoint_every": 128}]


@pytest.mark.parametrize("variant, kwargs", [
    ("plugin-sac", {"plugin_kwargs": {"buffer_size": 1000, "learning_starts": 32}}),
    ("plugin-dqn", {"plugin_kwargs": {"buffer_size": 1000, "learning_starts": 32}}),
])
def test_each_family_trains_and_is_evaluated(tmp_path, variant, kwargs):
    cfg = load_config(variant, "quick", [*TINY, kwargs] if kwargs else TINY)
    done = train_run(cfg, seed=0, out=tmp_path, progress=False)
    assert done["steps"] >= 128
    assert 0.0 <= done["eval"]["epdms"] <= 1.0 and done["eval"]["scenes"] == 4
    run = tmp_path / variant / "seed0"
    assert (run / "model.zip").is_file() and (run / "curve.csv").is_file()
    assert json.loads((run / "config.json").read_text())["plugin"] == cfg.plugin
