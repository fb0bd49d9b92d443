"""Items 1-2 of the trust issue: SB3 zips and config-named modules run no code without an explicit flag."""

from __future__ import annotations

import json
import sys

import pytest

from irlvla_gym.agents import (SB3ModelAgent, TrustOptions, UntrustedInputError, apply_trust_options, file_sha256,
                               import_allowed, load_agent)

from .conftest import write_hostile_sb3_zip


def test_leaderboard_refuses_a_hostile_sb3_zip(tmp_path, marker):
    evil = write_hostile_sb3_zip(tmp_path / "evil.zip", marker)
    with pytest.raises(UntrustedInputError, match=r"evil\.zip.*--trust-pickle"):
        load_agent(str(evil))
    with pytest.raises(UntrustedInputError, match="trust_pickle=True"):
        SB3ModelAgent.load(evil)


def test_leaderboard_cli_exits_2_on_a_hostile_zip(tmp_path, marker, capsys):
    from irlvla_gym.cli import main

    evil = write_hostile_sb3_zip(tmp_path / "evil.zip", marker)
    code = main(["leaderboard", "--agents", str(evil), "--num-scenes", "1", "--out", str(tmp_path / "lb"),
                 "--no-progress"])
    assert code == 2 and "--trust-pickle" in capsys.readouterr().err
    assert not (tmp_path / "lb").exists()


def test_run_dirs_are_trusted_only_with_a_matching_recorded_hash(tmp_path, marker):
    from baselines.evaluate import load_run_agent, run_model_trusted

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"variant": "ppo-cnn", "seed": 0}))
    evil = write_hostile_sb3_zip(run / "model.zip", marker)
    with pytest.raises(UntrustedInputError, match="model.zip"):
        load_run_agent(run)
    # A sidecar whose hash is not the zip's (e.g. copied from another run) does not make it trusted.
    (run / "model.irlvla.json").write_text(json.dumps({"obs_config": None, "zip_sha256": "0" * 64}))
    assert not run_model_trusted(run)
    with pytest.raises(UntrustedInputError):
        load_run_agent(run)
    with pytest.raises(UntrustedInputError):
        load_run_agent(run, trust_pickle=False)
    # The hash SB3ModelAgent.save records marks the run's own zip (not loaded here: this one is hostile).
    (run / "model.irlvla.json").write_text(json.dumps({"zip_sha256": file_sha256(evil)}))
    assert run_model_trusted(run)
    (run / "config.json").unlink()
    assert not run_model_trusted(run)


def _hostile_module(tmp_path, marker, name: str):
    (tmp_path / f"{name}.py").write_text(f"import pathlib\npathlib.Path({str(marker)!r}).touch()\n"
                                         "class Hook:\n    def on_interval(self, snap):\n        return {}\n"
                                         "def train(env_fn, budget, seed):\n    return None\n")
    sys.path.insert(0, str(tmp_path))


def test_hooks_resolve_registered_names_only(tmp_path, marker, monkeypatch):
    from baselines.hooks import BUILTIN_HOOKS, load_hooks, resolve_hook_class

    monkeypatch.delenv("IRLVLA_ALLOW_IMPORT", raising=False)
    _hostile_module(tmp_path, marker, "evil_hook_mod")
    try:
        with pytest.raises(UntrustedInputError, match=r"cfg\.yaml: hooks\[1\]\.class = 'evil_hook_mod:Hook'.*"
                                                      r"--allow-import evil_hook_mod"):
            load_hooks([object(), {"class": "evil_hook_mod:Hook"}], source="cfg.yaml")
        with pytest.raises(UntrustedInputError, match="not a registered hook"):
            load_hooks([{"class": "os:system"}])
        assert "evil_hook_mod" not in sys.modules
        # Registered names and their exact targets resolve.
        assert resolve_hook_class("probe").__name__ == "ProbeHook"
        assert resolve_hook_class(BUILTIN_HOOKS["probe"]).__name__ == "ProbeHook"
    finally:
        sys.path.remove(str(tmp_path))


def test_hooks_import_an_allowed_module(tmp_path, monkeypatch):
    from baselines.hooks import load_hooks

    (tmp_path / "ok_hook_mod.py").write_text("class Hook:\n    def __init__(self, k=0):\n        self.k = k\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    [hook] = load_hooks([{"class": "ok_hook_mod:Hook", "kwargs": {"k": 3}}], allow_import=("ok_hook_mod",))
    assert hook.k == 3
    monkeypatch.setenv("IRLVLA_ALLOW_IMPORT", "other,ok_hook_mod")
    assert load_hooks([{"class": "ok_hook_mod:Hook"}])[0].k == 0


def test_plugin_spec_from_a_config_needs_the_allow_list(tmp_path, marker, monkeypatch):
    from baselines.config import RunConfig
    from baselines.plugin import check_plugin_spec, train_plugin

    monkeypatch.delenv("IRLVLA_ALLOW_IMPORT", raising=False)
    _hostile_module(tmp_path, marker, "evil_algo_mod")
    try:
        cfg = RunConfig(variant="evil", algorithm="plugin", plugin="evil_algo_mod:train")
        with pytest.raises(UntrustedInputError, match=r"variant 'evil'.*plugin = 'evil_algo_mod:train'"):
            train_plugin(cfg, 0, tmp_path / "run")
        assert "evil_algo_mod" not in sys.modules
        check_plugin_spec("a2c")  # built-in names resolve
        check_plugin_spec("evil_algo_mod:train", allow_import=("evil_algo_mod",))  # allowed: no error
    finally:
        sys.path.remove(str(tmp_path))


def test_allow_list_matches_whole_module_components(monkeypatch):
    monkeypatch.delenv("IRLVLA_ALLOW_IMPORT", raising=False)
    assert import_allowed("pkg.sub", ("pkg",)) and import_allowed("pkg", ("pkg",))
    assert not import_allowed("pkgevil", ("pkg",)) and not import_allowed("pkg", ())
    assert import_allowed("anything", ("*",))


def test_cli_flags_reach_the_environment(monkeypatch):
    monkeypatch.delenv("IRLVLA_ALLOW_IMPORT", raising=False)
    monkeypatch.delenv("IRLVLA_TRUST_PICKLE", raising=False)
    apply_trust_options(TrustOptions(trust_pickle=True, allow_import=("a.b",)))
    import os

    assert os.environ["IRLVLA_TRUST_PICKLE"] == "1" and import_allowed("a.b.c")
