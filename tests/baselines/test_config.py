"""The run config: yaml + preset + overrides into typed sections, one clear error per bad key, and config.json files
of earlier versions (sparse sections) still accepted by the resume check."""

from __future__ import annotations

import json

import pytest

from baselines.config import (
    PRESETS, VARIANTS, BCAnchorConfig, DPPOConfig, EvaluationConfig, PPOConfig, RunConfig, config_path, load_config,
)


@pytest.mark.parametrize("variant", [*VARIANTS, "plugin-a2c"])
@pytest.mark.parametrize("preset", PRESETS)
def test_every_shipped_config_loads_typed(variant, preset):
    cfg = load_config(variant, preset)
    assert isinstance(cfg.ppo, PPOConfig) and isinstance(cfg.dppo, DPPOConfig)
    assert isinstance(cfg.bc, BCAnchorConfig) and isinstance(cfg.eval, EvaluationConfig)
    assert RunConfig.from_dict(cfg.to_dict()) == cfg
    assert json.loads(json.dumps(cfg.to_dict()))["eval"]["split"] == cfg.eval.split


def test_yaml_values_presets_and_overrides_land_in_the_sections():
    cfg = load_config("ppo-vla-rwm-bc", "full", ["ppo.n_steps=16", {"bc": {"num_scenes": 4}}, "eval.num_scenes=3"])
    assert cfg.ppo.n_steps == 16 and cfg.ppo.learning_rate == 3e-5 and cfg.ppo.target_kl is None
    assert cfg.bc == BCAnchorConfig(weight=cfg.bc.weight, kind=cfg.bc.kind, batch_size=cfg.bc.batch_size, num_scenes=4)
    assert cfg.bc.weight > 0 and cfg.eval == EvaluationConfig("synthetic-test", 3)
    assert cfg.total_timesteps == 200000 and cfg.env["num_scenes"] == 4000
    dppo = load_config("dppo-vla-rwm", "quick")
    assert dppo.dppo.ft_denoising_steps == 4 and dppo.dppo.denoise_std == 0.02 and dppo.dppo.bc_batch_size == 64
    assert RunConfig(variant="x", ppo={"n_steps": 8}).ppo == PPOConfig(n_steps=8)  # dicts in Python too


@pytest.mark.parametrize("override, message", [
    ("ppo.n_step=8", r"unknown ppo key\(s\) \['n_step'\]; valid: \["),
    ("dppo.k=2", r"unknown dppo key\(s\) \['k'\]"),
    ("eval.scenes=2", r"unknown eval key\(s\) \['scenes'\]"),
    ("env.num_scene=2", r"env: unknown env argument\(s\) \['num_scene'\]"),
    ("env.reward=epdms", "env.reward: set the run's `reward`"),
    ("nonsense=1", r"unknown config key\(s\) \['nonsense'\]"),
])
def test_a_bad_key_is_named(override, message):
    with pytest.raises(ValueError, match=message):
        load_config("ppo-vla-epdms", "quick", [override])


def test_unknown_preset_is_named():
    with pytest.raises(ValueError, match=r"ppo-vla-rwm.yaml has no preset 'huge' \(has \['full', 'paper', 'quick'\]\)"):
        load_config("ppo-vla-rwm", "huge")
    assert config_path("ppo-vla-rwm").name == "ppo-vla-rwm.yaml"


def test_resume_check_accepts_config_json_of_earlier_versions(tmp_path):
    """Before the sections were typed, config.json held them as written in the yaml (e.g. ``bc: {weight: 0.0}``,
    four of PPO's keys): the same settings written now compare equal; a different setting still refuses."""
    from baselines.runner import check_config

    cfg = load_config("ppo-vla-epdms", "quick")
    old = {**cfg.to_dict(), "seed": 0}
    old["ppo"] = {k: v for k, v in old["ppo"].items() if k in ("n_steps", "batch_size", "n_epochs", "learning_rate",
                                                               "gamma", "gae_lambda", "clip_range", "ent_coef",
                                                               "vf_coef", "max_grad_norm")}
    old["bc"], old["dppo"], old["eval"] = {"weight": 0.0}, {}, {"split": "synthetic-test", "num_scenes": 100}
    (tmp_path / "config.json").write_text(json.dumps(old))
    check_config(tmp_path, {**cfg.to_dict(), "seed": 0})
    other = load_config("ppo-vla-epdms", "quick", ["ppo.n_epochs=7"])
    with pytest.raises(ValueError, match=r"different config \(keys \['ppo'\]\)"):
        check_config(tmp_path, {**other.to_dict(), "seed": 0})


def test_unset_removes_a_key_that_a_deep_merge_cannot():
    """Issue ecosystem: another algorithm's plugin_kwargs entry can be removed (--unset), then --set applies."""
    from baselines.config import Overrides

    base = load_config("plugin-a2c", "quick")
    assert "n_steps" in base.plugin_kwargs
    cfg = load_config("plugin-a2c", "quick", Overrides(unsets=["plugin_kwargs.n_steps"],
                                                       sets=["plugin_kwargs.buffer_size=5000"]).as_list())
    assert "n_steps" not in cfg.plugin_kwargs and cfg.plugin_kwargs["buffer_size"] == 5000
    with pytest.raises(ValueError, match="--unset plugin_kwargs.nope: no such key"):
        load_config("plugin-a2c", "quick", ["~plugin_kwargs.nope"])
