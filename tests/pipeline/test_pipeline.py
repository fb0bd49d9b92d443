"""The main job end to end on a tiny preset: every stage runs, artefacts land in one run directory, a rerun skips
finished stages, and bad arguments fail clearly."""

import json

import pytest

from irlvla_gym import pipeline
from irlvla_gym.pipeline import PRESETS, Budgets, PipelineConfig, run_pipeline

TINY = {
    "scenes": {"synthetic-train": 12, "synthetic-val": 4, "synthetic-test": 4, "synthetic-hard": 2},
    "bc_scenes": 12, "bc_epochs": 1, "bc_val_scenes": 4, "bc_score_scenes": 2,
    "rwm_scenes": 6, "rwm_epochs": 1, "rwm_eval_scenes": 3,
    "ppo_variants": ("ppo-vla-rwm",), "ppo_preset": "quick", "leaderboard_scenes": 3, "workers": 1,
    "ppo_overrides": {"total_timesteps": 32, "env": {"num_scenes": 4}, "n_envs": 2, "checkpoint_every": 32,
                      "ppo": {"n_steps": 16, "batch_size": 16, "n_epochs": 1}},
}


@pytest.fixture
def tiny_preset(monkeypatch):
    monkeypatch.setitem(PRESETS, "tiny", TINY)
    return "tiny"


def test_whole_pipeline_on_a_tiny_preset(tmp_path, tiny_preset):
    out = tmp_path / "run"
    cfg = PipelineConfig(out=out, preset=tiny_preset, num_renders=1, progress=False)
    summary = run_pipeline(cfg)
    assert set(summary) == set(pipeline.STAGE_NAMES)
    for name in pipeline.STAGE_NAMES:
        assert (out / "stages" / f"{name}.json").is_file()
    assert (out / "bc" / "model.safetensors").is_file()
    assert (out / "rwm" / "ckpt" / "model.safetensors").is_file()
    assert (out / "rwm" / "eval" / "report.json").is_file()
    run = out / "ppo" / "ppo-vla-rwm" / "seed0"
    assert (run / "network" / "config.json").is_file()
    # stage 3 trains against the stage-2 model of this run, from its stage-1 policy
    run_cfg = json.loads((run / "config.json").read_text())
    assert run_cfg["reward"] == f"rwm:{out / 'rwm' / 'ckpt'}" and run_cfg["pretrained"] == str(out / "bc")
    assert run_cfg["total_timesteps"] == 32 and run_cfg["ppo"]["n_steps"] == 16
    agents = {row["agent"] for row in summary["leaderboard"]["result"]["rows"]}
    assert {"human", "stand-still", "constant-velocity", "pdm-closed", "BC (stage 1)",
            pipeline.AGENT_LABELS["ppo-vla-rwm"]} <= agents
    for row in summary["leaderboard"]["result"]["rows"]:
        assert 0.0 <= row["epdms"] <= 1.0 and row["scenes"] == 3
    text = (out / "summary.md").read_text()
    assert pipeline.AGENT_LABELS["ppo-vla-rwm"] in text and "| stage | seconds |" in text
    assert json.loads((out / "summary.json").read_text())["scenes"]["result"]["synthetic-test"]["scenes"] == 4

    # A rerun finds every stage finished and redoes nothing.
    marker_times = {p.name: p.stat().st_mtime_ns for p in (out / "stages").iterdir()}
    again = run_pipeline(PipelineConfig(out=out, preset=tiny_preset, num_renders=1, progress=False))
    assert again.keys() == summary.keys()
    assert {p.name: p.stat().st_mtime_ns for p in (out / "stages").iterdir()} == marker_times


def test_presets_are_overrides_of_the_budgets():
    quick, full = PipelineConfig(preset="quick").budgets, PipelineConfig(preset="full").budgets
    assert quick == Budgets(ppo_overrides={"total_timesteps": 8192})
    assert set(full.scenes) == set(pipeline.SPLITS) and all(v is None for v in full.scenes.values())
    assert full.ppo_preset == "full" and "ppo-vla-rwm-bc" in full.ppo_variants and full.rwm_epochs == quick.rwm_epochs
    assert PipelineConfig(preset="full").out.as_posix() == "runs/full"


def test_command_line_builds_the_config(tmp_path):
    from irlvla_gym.cli import build_parser

    args = build_parser().parse_args(["pipeline", "--preset", "full", "--out", str(tmp_path), "--stages", "scenes",
                                      "bc", "--renders", "2", "--no-progress", "--seed", "3"])
    cfg = pipeline.from_args(PipelineConfig, args)
    assert (cfg.preset, cfg.out, cfg.stages, cfg.num_renders, cfg.progress, cfg.seed) == (
        "full", tmp_path, ("scenes", "bc"), 2, False, 3)


def test_bad_arguments_are_named(tmp_path, tiny_preset):
    with pytest.raises(ValueError, match="--preset"):
        PipelineConfig(out=tmp_path, preset="enormous")
    with pytest.raises(ValueError, match="--stages"):
        run_pipeline(PipelineConfig(out=tmp_path / "a", preset=tiny_preset, stages=("scenes", "nonsense")))
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "preset.json").write_text(json.dumps({"preset": "quick"}))
    with pytest.raises(ValueError, match=r"preset \(recorded 'quick', now"):
        run_pipeline(PipelineConfig(out=tmp_path / "b", preset=tiny_preset, stages=("scenes",)))


def test_two_workers_give_the_same_stores_and_policies(tmp_path, monkeypatch):
    """With ``workers: 2`` the scene stores are generated in two processes and the PPO variants trained side by side
    in two: the same store files and the same trained networks as one worker."""
    two = {**TINY, "ppo_variants": ("ppo-vla-rwm", "ppo-vla-epdms")}
    monkeypatch.setitem(PRESETS, "tiny1", {**two, "workers": 1})
    monkeypatch.setitem(PRESETS, "tiny2", {**two, "workers": 2})
    stages = ("scenes", "bc", "rwm_data", "rwm", "ppo")
    outs = {}
    for preset in ("tiny1", "tiny2"):
        outs[preset] = tmp_path / preset
        run_pipeline(PipelineConfig(out=outs[preset], preset=preset, num_renders=1, progress=False, stages=stages))
    for split in TINY["scenes"]:
        manifests = [json.loads((outs[p] / "scenes" / split / "manifest.json").read_text()) for p in outs]
        assert manifests[0]["tokens"] == manifests[1]["tokens"]
        assert [s["files"] for s in manifests[0]["shards"]] == [s["files"] for s in manifests[1]["shards"]]
    for variant in two["ppo_variants"]:
        weights = [(outs[p] / "ppo" / variant / "seed0" / "network" / "model.safetensors").read_bytes() for p in outs]
        assert weights[0] == weights[1], variant


def test_ray_backend_runs_the_stages_on_ray(tmp_path, tiny_preset):
    """``--backend ray``: the RWM dataset, the PPO rollouts (RayVecEnv actors) and the leaderboard run on a local Ray
    instance the pipeline starts and stops; the PPO run is the same as the local one (the backend is not part of its
    config)."""
    pytest.importorskip("ray")
    import ray

    out = tmp_path / "ray"
    summary = run_pipeline(PipelineConfig(out=out, preset=tiny_preset, num_renders=1, progress=False, backend="ray"))
    assert not ray.is_initialized()  # the pipeline stops the Ray it started
    run = out / "ppo" / "ppo-vla-rwm" / "seed0"
    assert (run / "network" / "model.safetensors").is_file()
    assert "backend" not in json.loads((run / "config.json").read_text())
    assert {row["agent"] for row in summary["leaderboard"]["result"]["rows"]} >= {"stand-still", "BC (stage 1)"}


def test_stage_three_learned_rewards_are_the_stage_two_model_as_reward_and_teacher(tmp_path, monkeypatch):
    """A distillation variant is taught by the model stage 2 trained (never a shipped one), and PPO is rewarded by
    it; the rule-based-scorer variant keeps its reward and has no distillation; every run starts from stage 1."""
    monkeypatch.setitem(PRESETS, "greedy", {**PRESETS["quick"], "ppo_variants": ("ppo-vla-rwm-greedy", "ppo-vla-epdms")})
    cfg = PipelineConfig(out=tmp_path / "run", preset="greedy", progress=False)
    greedy, scorer = pipeline.ppo_run_configs(cfg)
    ckpt = str(cfg.rwm_dir / "ckpt")
    assert greedy.reward == f"rwm:{ckpt}" and greedy.distill.reward == ckpt and greedy.distill.epochs > 0
    assert scorer.reward == "epdms" and scorer.distill.epochs == 0
    assert greedy.pretrained == scorer.pretrained == str(cfg.bc_dir)
    assert greedy.total_timesteps == scorer.total_timesteps == 8192
