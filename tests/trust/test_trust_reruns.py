"""Item 3 of the trust issue: rerunning a finished RWM training is a no-op; another config is an error."""

from __future__ import annotations

import hashlib

import pytest

from reward_models.train import TrainConfig, train

CFG = dict(batch_scenes=2, val_fraction=0.34)


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_finished_rwm_run_is_a_no_op(tiny_rwm_data, tmp_path):
    out = tmp_path / "ck"
    first = train(str(tiny_rwm_data), str(out), TrainConfig(epochs=2, **CFG), progress=False)
    assert first["finished"] and first["epochs_done"] == 2
    weights = _digest(out / "model.safetensors")
    for _ in range(2):
        again = train(str(tiny_rwm_data), str(out), TrainConfig(epochs=2, **CFG), progress=False)
        assert again["epochs_done"] == 2 and again["steps"] == first["steps"] and again["finished"]
    assert _digest(out / "model.safetensors") == weights


def test_early_stopped_rwm_run_is_not_extended(tiny_rwm_data, tmp_path):
    out = tmp_path / "ck"
    # lr 0 with patience 1: the second epoch cannot improve the validation loss, so the run stops early.
    first = train(str(tiny_rwm_data), str(out), TrainConfig(epochs=10, patience=1, lr=0.0, **CFG), progress=False)
    assert first["epochs_done"] < 10 and first["stopped"].startswith("early stop")
    again = train(str(tiny_rwm_data), str(out), TrainConfig(epochs=10, patience=1, lr=0.0, **CFG), progress=False)
    assert again["epochs_done"] == first["epochs_done"] and again["steps"] == first["steps"]


def test_rwm_rerun_with_another_config_names_the_field(tiny_rwm_data, tmp_path):
    out = tmp_path / "ck"
    train(str(tiny_rwm_data), str(out), TrainConfig(epochs=1, **CFG), progress=False)
    with pytest.raises(ValueError, match=r"train\.lr \(recorded 0\.002, now 0\.01\)"):
        train(str(tiny_rwm_data), str(out), TrainConfig(epochs=1, lr=0.01, **CFG), progress=False)
    with pytest.raises(ValueError, match="max_scenes"):
        train(str(tiny_rwm_data), str(out), TrainConfig(epochs=1, **CFG), max_scenes=2, progress=False)
    # Raising the epoch budget continues the run (a budget, not a different training).
    more = train(str(tiny_rwm_data), str(out), TrainConfig(epochs=2, **CFG), progress=False)
    assert more["epochs_done"] == 2


def test_pipeline_rerun_with_another_seed_or_preset_is_an_error(tmp_path):
    import json

    from irlvla_gym.pipeline import STAGE_NAMES, PipelineConfig, run_pipeline

    out = tmp_path / "run"
    # A seed-0 run whose stages are all finished: a rerun runs nothing and keeps the record.
    (out / "stages").mkdir(parents=True)
    for name in STAGE_NAMES:
        (out / "stages" / f"{name}.json").write_text(json.dumps({"result": {}, "seconds": 0}))
    summary = run_pipeline(PipelineConfig(out=out, seed=0, progress=False))
    assert set(summary) == set(STAGE_NAMES)
    record = json.loads((out / "preset.json").read_text())
    assert record["seed"] == 0 and record["budgets"]["rwm_epochs"] == 20
    with pytest.raises(ValueError, match=r"seed \(recorded 0, now 1\)"):
        run_pipeline(PipelineConfig(out=out, seed=1, progress=False))
    with pytest.raises(ValueError, match=r"preset \(recorded 'quick', now 'full'\)"):
        run_pipeline(PipelineConfig(out=out, preset="full", progress=False))
    with pytest.raises(ValueError, match="num_renders"):
        run_pipeline(PipelineConfig(out=out, num_renders=2, progress=False))
    assert json.loads((out / "preset.json").read_text()) == record  # never rewritten by a refused rerun


def test_pipeline_reads_the_old_preset_file(tmp_path):
    import json

    from irlvla_gym.pipeline import PipelineConfig, check_run_config

    out = tmp_path / "run"
    out.mkdir()
    (out / "preset.json").write_text(json.dumps({"preset": "quick", "seed": 0}))
    with pytest.raises(ValueError, match="seed"):
        check_run_config(PipelineConfig(out=out, seed=3))
    check_run_config(PipelineConfig(out=out, seed=0))
    assert "budgets" in json.loads((out / "preset.json").read_text())
