"""Weight-space interpolation of VLA networks (irlvla_gym.policies.interpolate, WiSE-FT)."""

from __future__ import annotations

import pytest
import torch

from .conftest import tiny_config


def _pair():
    from irlvla_gym.policies import VLAConfig, VLANetwork

    torch.manual_seed(0)
    base = VLANetwork(VLAConfig.from_dict(tiny_config()), load_pretrained=False)
    torch.manual_seed(1)
    tuned = VLANetwork(VLAConfig.from_dict(tiny_config()), load_pretrained=False)
    return base, tuned


def test_the_ends_of_the_path_are_the_two_networks_and_the_middle_is_the_mean():
    from irlvla_gym.policies.interpolate import interpolate_networks

    base, tuned = _pair()
    b, t = base.state_dict(), tuned.state_dict()
    at0, at1 = interpolate_networks(base, tuned, 0.0).state_dict(), interpolate_networks(base, tuned, 1.0).state_dict()
    half = interpolate_networks(base, tuned, 0.5).state_dict()
    floats = [k for k in t if t[k].is_floating_point()]
    assert floats and all(torch.equal(at0[k], b[k]) and torch.equal(at1[k], t[k]) for k in t)
    moved = [k for k in floats if not torch.equal(b[k], t[k])]
    assert moved, "two seeds give different weights"
    for k in moved:
        torch.testing.assert_close(half[k], (b[k] + t[k]) / 2, rtol=0, atol=1e-6)


def test_the_mixed_network_plans_between_the_two_on_a_linear_layer():
    """The plan head's last layer is linear in its weights: at a fixed input its output moves linearly with alpha."""
    from irlvla_gym.policies.interpolate import interpolate_state_dicts

    lin_b, lin_t = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    x = torch.randn(5, 3)
    mixed = torch.nn.Linear(3, 2)
    mixed.load_state_dict(interpolate_state_dicts(lin_b.state_dict(), lin_t.state_dict(), 0.25))
    torch.testing.assert_close(mixed(x), 0.75 * lin_b(x) + 0.25 * lin_t(x))


@pytest.mark.parametrize("alpha", [-0.1, 1.5, float("nan")])
def test_alpha_outside_zero_one_is_refused(alpha):
    from irlvla_gym.policies.interpolate import interpolate_state_dicts

    lin = torch.nn.Linear(2, 2).state_dict()
    with pytest.raises(ValueError, match="alpha must be in"):
        interpolate_state_dicts(lin, lin, alpha)


def test_different_architectures_are_refused_naming_the_field():
    from irlvla_gym.policies import VLAConfig, VLANetwork
    from irlvla_gym.policies.interpolate import interpolate_networks, interpolate_state_dicts

    base, _ = _pair()
    wider = VLANetwork(VLAConfig.from_dict(tiny_config(hidden=48)), load_pretrained=False)
    with pytest.raises(ValueError, match="hidden"):
        interpolate_networks(base, wider, 0.5)
    with pytest.raises(ValueError, match="shape"):
        interpolate_state_dicts({"w": torch.zeros(2)}, {"w": torch.zeros(3)}, 0.5)
    with pytest.raises(ValueError, match="different tensors"):
        interpolate_state_dicts({"w": torch.zeros(2)}, {"v": torch.zeros(2)}, 0.5)
    with pytest.raises(ValueError, match="cannot be interpolated"):
        interpolate_state_dicts({"n": torch.tensor([1])}, {"n": torch.tensor([2])}, 0.5)


def test_saved_mix_loads_back_and_records_its_sources(tmp_path):
    from safetensors import safe_open

    from irlvla_gym.policies import VLANetwork
    from irlvla_gym.policies.interpolate import save_interpolated

    base, tuned = _pair()
    base.save_pretrained(tmp_path / "base")
    tuned.save_pretrained(tmp_path / "tuned")
    out = save_interpolated(tmp_path / "base", tmp_path / "tuned", 0.5, tmp_path / "mix", record={"run": "x"})
    loaded = VLANetwork.from_pretrained(out).state_dict()
    b, t = base.state_dict(), tuned.state_dict()
    for k, v in loaded.items():
        if v.is_floating_point():
            torch.testing.assert_close(v, (b[k] + t[k]) / 2, rtol=0, atol=1e-6)
    with safe_open(str(out / "model.safetensors"), "pt") as fh:
        meta = fh.metadata()
    assert meta["interpolation_alpha"] == "0.5" and meta["run"] == "x"
    assert meta["interpolation_base"].endswith("base") and meta["interpolation_tuned"].endswith("tuned")
