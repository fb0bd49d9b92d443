"""``irlvla baselines interpolate``: WiSE-FT runs are new protocol runs beside their source
(baselines/interpolate.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from baselines.evaluate import load_run_agent
from baselines.interpolate import InterpolateJob, run_interpolate, variant_name
from baselines.protocol import find_runs, run_identity


def _fake_run(root: Path, base: Path, seed: int) -> Path:
    """A finished VLA run of variant ``tuned``: the base network moved by seeded noise, started from ``base``."""
    from irlvla_gym.policies import VLANetwork

    run = root / "tuned" / f"seed{seed}"
    net = VLANetwork.from_pretrained(base)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    net.save_pretrained(run / "network")
    (run / "config.json").write_text(json.dumps({"variant": "tuned", "seed": seed, "pretrained": str(base),
                                                 "env": {"obs_keys": ["camera", "ego", "instruction"]}}))
    (run / "done.json").write_text(json.dumps({"steps": 64, "wall_s": 1.5}))
    return run


def _weights(directory: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(directory / "model.safetensors"))


def test_interpolated_runs_are_found_loaded_and_exact_at_the_ends(tmp_path, checkpoints, capsys):
    base = checkpoints["gaussian"]
    src = [_fake_run(tmp_path, base, s) for s in (0, 1)]
    result = run_interpolate(InterpolateJob(variant="tuned", out=str(tmp_path), alphas=(0.0, 0.5, 1.0)))
    assert len(result["written"]) == 6 and not result["skipped"]
    runs = find_runs(tmp_path)
    assert set(runs) == {"tuned", "tuned-wise0", "tuned-wise50", "tuned-wise100"}
    assert all(set(by_seed) == {0, 1} for by_seed in runs.values())
    b, t = _weights(base), _weights(src[1] / "network")
    at0, at1 = _weights(runs["tuned-wise0"][1] / "network"), _weights(runs["tuned-wise100"][1] / "network")
    half = _weights(runs["tuned-wise50"][1] / "network")
    assert all(torch.equal(at0[k], b[k]) and torch.equal(at1[k], t[k]) for k in b)
    k = next(k for k in b if b[k].is_floating_point() and not torch.equal(b[k], t[k]))
    torch.testing.assert_close(half[k], (b[k] + t[k]) / 2, rtol=0, atol=1e-6)
    cfg = json.loads((runs["tuned-wise50"][1] / "config.json").read_text())
    assert cfg["variant"] == "tuned-wise50" and cfg["seed"] == 1
    assert cfg["interpolation"]["alpha"] == 0.5 and cfg["interpolation"]["base"] == str(base)
    assert json.loads((runs["tuned-wise50"][1] / "done.json").read_text())["wall_s"] == 1.5
    assert run_identity(runs["tuned-wise50"][1])["weights"] != run_identity(src[1])["weights"]
    agent = load_run_agent(runs["tuned-wise50"][0])
    assert agent.name == "tuned-wise50/s0"
    # a rerun is a no-op; the same name for another mix is refused rather than overwritten
    again = run_interpolate(InterpolateJob(variant="tuned", out=str(tmp_path), alphas=(0.5,)))
    assert not again["written"] and len(again["skipped"]) == 2
    with pytest.raises(FileExistsError, match="another run"):
        run_interpolate(InterpolateJob(variant="tuned", out=str(tmp_path), alphas=(0.25,), name="tuned-wise50"))
    assert "up to date" in capsys.readouterr().out
    # an unfinished directory of another kind (a training run in progress) is never deleted
    busy = tmp_path / "tuned-wise25" / "seed0"
    (busy / "checkpoint").mkdir(parents=True)
    with pytest.raises(FileExistsError, match="not an interpolated run"):
        run_interpolate(InterpolateJob(variant="tuned", out=str(tmp_path), alphas=(0.25,), seeds=(0,)))
    assert (busy / "checkpoint").is_dir()
    # an interrupted mix (network/ written, no done.json) is redone
    shutil.rmtree(tmp_path / "tuned-wise25")
    (tmp_path / "tuned-wise25" / "seed0" / "network").mkdir(parents=True)
    assert run_interpolate(InterpolateJob(variant="tuned", out=str(tmp_path), alphas=(0.25,), seeds=(0,)))["written"]


def test_bad_requests_name_the_argument(tmp_path, checkpoints):
    _fake_run(tmp_path, checkpoints["gaussian"], 0)
    with pytest.raises(ValueError, match="alpha must be in"):
        run_interpolate(InterpolateJob(variant="tuned", out=str(tmp_path), alphas=(1.2,)))
    with pytest.raises(ValueError, match="no finished run"):
        run_interpolate(InterpolateJob(variant="missing", out=str(tmp_path)))
    with pytest.raises(ValueError, match="--name"):
        variant_name("{variant}", "tuned", 0.5)
    with pytest.raises(ValueError, match="unknown field"):
        variant_name("{model}-x", "tuned", 0.5)
    assert variant_name("{variant}-wise{percent}", "v", 0.125) == "v-wise12.5"
    with pytest.raises(ValueError, match="configs differ"):  # a base of another architecture
        run_interpolate(InterpolateJob(variant="tuned", out=str(tmp_path), base=str(checkpoints["diffusion"])))
