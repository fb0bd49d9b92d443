"""Weight-space interpolation of two VLA networks of one architecture (WiSE-FT, Wortsman et al., CVPR 2022).

``theta(alpha) = (1 - alpha) * theta_base + alpha * theta_tuned``, tensor by tensor: ``alpha = 0`` is the base network
(e.g. the stage-1 BC policy), ``alpha = 1`` the fine-tuned one (e.g. IRL-VLA after PPO). For networks fine-tuned from
one initialisation the path between them stays a good model, and mixing back towards the start is the standard remedy
when a fine-tuned model meets inputs unlike its fine-tuning data (here: PPO on synthetic scenes, evaluation on real
drives). ``baselines/README.md`` measures the whole path on every evaluation set (``irlvla baselines interpolate``).

Only floating-point tensors are mixed; any other tensor (an integer buffer) must be equal in both networks. Nothing
is executed from either checkpoint (json + safetensors, as :meth:`VLANetwork.from_pretrained`).
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any, Mapping

import torch

from irlvla_gym.policies.config import VLAConfig


def check_alpha(alpha: float) -> float:
    """``alpha`` as a float in [0, 1]; ValueError otherwise (outside that range the mix extrapolates)."""
    value = float(alpha)
    if not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise ValueError(f"alpha must be in [0, 1] (0 = the base network, 1 = the fine-tuned one), got {alpha!r}")
    return value


def config_differences(base: VLAConfig, tuned: VLAConfig) -> list[str]:
    """Names of the :class:`VLAConfig` fields whose values differ (empty: one architecture)."""
    return [f.name for f in dataclasses.fields(VLAConfig) if getattr(base, f.name) != getattr(tuned, f.name)]


def interpolate_state_dicts(base: Mapping[str, torch.Tensor], tuned: Mapping[str, torch.Tensor],
                            alpha: float) -> dict[str, torch.Tensor]:
    """``(1 - alpha) * base + alpha * tuned`` for every floating-point tensor (computed in float64, stored in the
    tuned tensor's dtype); other tensors are copied and must be equal. Raises ValueError naming the first tensor
    whose name, shape or (non-float) value does not match."""
    alpha = check_alpha(alpha)
    if set(base) != set(tuned):
        only = sorted(set(base) ^ set(tuned))
        raise ValueError(f"the networks have different tensors (e.g. {only[:3]}): not one architecture")
    out: dict[str, torch.Tensor] = {}
    for name, t in tuned.items():
        b = base[name]
        if tuple(b.shape) != tuple(t.shape):
            raise ValueError(f"tensor {name!r}: shape {tuple(b.shape)} in the base network, {tuple(t.shape)} in the "
                             f"fine-tuned one")
        if t.is_floating_point():
            mixed = (1.0 - alpha) * b.detach().double() + alpha * t.detach().double()
            out[name] = mixed.to(t.dtype)
        elif torch.equal(b, t):
            out[name] = t.detach().clone()
        else:
            raise ValueError(f"tensor {name!r} ({t.dtype}) differs between the networks and cannot be interpolated")
    return out


def interpolate_networks(base: Any, tuned: Any, alpha: float) -> Any:
    """A new :class:`~irlvla_gym.policies.network.VLANetwork` with the weights of ``alpha`` along the path from
    ``base`` to ``tuned`` (each a network, a checkpoint directory or a shipped name such as ``"bc_default"``).

    Raises ValueError naming the config fields that differ (the networks must share one architecture)."""
    from irlvla_gym.policies.network import VLANetwork

    base_net = base if isinstance(base, VLANetwork) else VLANetwork.from_pretrained(base)
    tuned_net = tuned if isinstance(tuned, VLANetwork) else VLANetwork.from_pretrained(tuned)
    differ = config_differences(base_net.config, tuned_net.config)
    if differ:
        raise ValueError(f"the networks' configs differ in {differ}: interpolation needs one architecture "
                         f"(a fine-tuned network and the checkpoint it started from)")
    out = VLANetwork(dataclasses.replace(tuned_net.config), load_pretrained=False)
    out.load_state_dict(interpolate_state_dicts(base_net.state_dict(), tuned_net.state_dict(), alpha), strict=True)
    return out.train(tuned_net.training)


def save_interpolated(base: str | Path, tuned: str | Path, alpha: float, out_dir: str | Path,
                      record: Mapping[str, Any] | None = None) -> Path:
    """Interpolate two checkpoints and save the result with ``save_pretrained`` into ``out_dir`` (returned); the
    safetensors header records ``alpha``, both sources and ``record`` (strings)."""
    alpha = check_alpha(alpha)
    net = interpolate_networks(str(base), str(tuned), alpha)
    meta = {"interpolation_alpha": repr(alpha), "interpolation_base": str(base), "interpolation_tuned": str(tuned),
            **{str(k): str(v) for k, v in (record or {}).items()}}
    return Path(net.save_pretrained(out_dir, metadata=meta))


__all__ = ["check_alpha", "config_differences", "interpolate_networks", "interpolate_state_dicts",
           "save_interpolated"]
