"""Planning heads of the VLA network: a Gaussian head and a diffusion head over the normalised plan.

Both heads read the fused tokens ``(B, T, d)`` of :class:`~irlvla_gym.policies.network.VLAEncoder` (token 0 is the
pooled *plan token*) and output the **mean action** ``(B, 24)``: the env's trajectory action, i.e. the 8 x (x, y,
yaw) plan divided by :data:`irlvla_gym.plans.codec.PLAN_SCALE` and flattened row by row. Both own the
state-independent ``log_std`` (24,) of the Gaussian that SB3's PPO samples from, so a diffusion plan is used as the
Gaussian's mean exactly like the MLP's.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from irlvla_gym.plans.codec import ACTION_DIM
from irlvla_gym.scenes.scene import NUM_FUTURE


class GaussianHead(nn.Module):
    """MLP on the pooled plan token -> mean of the normalised plan; plus a state-independent log-std.

    Args:
        hidden: token width d.
        log_std_init: initial value of every entry of ``log_std``.
        dropout: dropout before the last layer.
    """

    def __init__(self, hidden: int, log_std_init: float = -2.0, dropout: float = 0.0):
        super().__init__()
        self.mlp = nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, 2 * hidden), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(2 * hidden, ACTION_DIM))
        nn.init.orthogonal_(self.mlp[-1].weight, gain=0.01)  # SB3's small initial action gain
        nn.init.zeros_(self.mlp[-1].bias)
        self.log_std = nn.Parameter(torch.full((ACTION_DIM,), float(log_std_init)))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Fused tokens (B, T, d) -> mean action (B, 24)."""
        return self.mlp(tokens[:, 0])

    def bc_loss(self, tokens: torch.Tensor, target: torch.Tensor, loss: str = "mse") -> dict[str, torch.Tensor]:
        """Imitation loss against expert actions ``target`` (B, 24).

        ``loss="mse"``: mean squared error of the mean. ``"nll"``: Gaussian negative log-likelihood per dimension
        (also fits ``log_std``). Returns ``{"loss": scalar, "mse": scalar, "pred": (B, 24)}``.
        """
        pred = self(tokens)
        mse = F.mse_loss(pred, target)
        if loss == "nll":
            log_std = self.log_std.expand_as(pred)
            nll = (0.5 * ((target - pred) / log_std.exp()) ** 2 + log_std + 0.5 * math.log(2 * math.pi)).mean()
            return {"loss": nll, "mse": mse, "pred": pred}
        return {"loss": mse, "mse": mse, "pred": pred}


def cosine_alphas_cumprod(steps: int, s: float = 0.008) -> torch.Tensor:
    """(steps,) cumulative signal fractions alpha_bar_t of the cosine schedule (Nichol & Dhariwal), t = 1..steps.

    alpha_bar decreases from close to 1 (t = 1) to close to 0 (t = steps).
    """
    t = torch.arange(steps + 1, dtype=torch.float64) / steps
    f = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2
    abar = (f / f[0])[1:]
    return abar.clamp(1e-4, 0.9999).float()


class DiffusionHead(nn.Module):
    """A few-step diffusion policy over the normalised plan, conditioned on the fused tokens by cross-attention.

    The plan is 8 waypoint tokens ``(x, y, yaw)``; a transformer decoder (self-attention between waypoints,
    cross-attention to the fused observation tokens, feed-forward) predicts the clean plan x0 from a noisy plan
    x_t and the step t (x0-prediction, as in DiffusionDrive's truncated schedule). Sampling runs the ``steps``
    deterministic DDIM updates from t = steps to 1.

    :meth:`forward` is the *deterministic* sample started from x_T = 0 (the mode of the start noise), so the same
    observation always gives the same plan: it serves as the Gaussian's mean in PPO (gradients flow through every
    denoising step). :meth:`sample` draws stochastic plans from random start noise.

    Args:
        hidden: token width d. heads: attention heads. layers: decoder layers. steps: diffusion steps T.
        log_std_init: initial value of the Gaussian's ``log_std``. dropout: decoder dropout.
    """

    def __init__(self, hidden: int, heads: int = 4, layers: int = 2, steps: int = 8, log_std_init: float = -2.0,
                 dropout: float = 0.0):
        super().__init__()
        self.steps = int(steps)
        self.register_buffer("alphas_cumprod", cosine_alphas_cumprod(self.steps), persistent=False)
        self.in_proj = nn.Linear(3, hidden)
        self.waypoint_embed = nn.Parameter(torch.randn(NUM_FUTURE, hidden) * 0.02)
        self.time_embed = nn.Embedding(self.steps, hidden)
        layer = nn.TransformerDecoderLayer(hidden, heads, 4 * hidden, dropout, activation="gelu", batch_first=True,
                                           norm_first=True)
        self.decoder = nn.TransformerDecoder(layer, layers)
        self.out = nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, 3))
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)
        self.log_std = nn.Parameter(torch.full((ACTION_DIM,), float(log_std_init)))

    def denoise(self, x_t: torch.Tensor, t: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Predict the clean plan x0 (B, 24) from the noisy plan ``x_t`` (B, 24) at step indices ``t`` (B,) int64
        in [0, steps) (index k = step k + 1), given fused tokens (B, T, d)."""
        b = x_t.shape[0]
        h = self.in_proj(x_t.reshape(b, NUM_FUTURE, 3)) + self.waypoint_embed + self.time_embed(t)[:, None, :]
        h = self.decoder(h, tokens)
        return self.out(h).reshape(b, ACTION_DIM)

    def _ddim(self, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        abar = self.alphas_cumprod
        x0 = x
        for k in range(self.steps - 1, -1, -1):
            t = torch.full((x.shape[0],), k, dtype=torch.long, device=x.device)
            x0 = self.denoise(x, t, tokens).clamp(-1.0, 1.0)
            if k > 0:
                eps = (x - abar[k].sqrt() * x0) / (1 - abar[k]).sqrt()
                x = abar[k - 1].sqrt() * x0 + (1 - abar[k - 1]).sqrt() * eps
        return x0

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Deterministic plan (B, 24) from x_T = 0: the Gaussian's mean."""
        return self._ddim(tokens.new_zeros(tokens.shape[0], ACTION_DIM), tokens)

    def sample(self, tokens: torch.Tensor, num_samples: int = 1,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """Stochastic plans (B, num_samples, 24) from Gaussian start noise."""
        b = tokens.shape[0]
        rep = tokens.repeat_interleave(num_samples, dim=0)
        noise = torch.randn(b * num_samples, ACTION_DIM, generator=generator, device=tokens.device,
                            dtype=tokens.dtype)
        return self._ddim(noise, rep).reshape(b, num_samples, ACTION_DIM)

    def bc_loss(self, tokens: torch.Tensor, target: torch.Tensor, loss: str = "mse") -> dict[str, torch.Tensor]:
        """Denoising loss against expert actions ``target`` (B, 24): MSE of the x0 prediction at a random step, plus
        the MSE of the deterministic sample (so the PPO mean is trained directly). ``loss`` is accepted for
        interface parity with :class:`GaussianHead` (only the mse form exists). Returns ``{"loss", "mse", "pred"}``.
        """
        b = target.shape[0]
        t = torch.randint(0, self.steps, (b,), device=target.device)
        abar = self.alphas_cumprod[t][:, None]
        noise = torch.randn_like(target)
        x_t = abar.sqrt() * target + (1 - abar).sqrt() * noise
        denoise = F.mse_loss(self.denoise(x_t, t, tokens), target)
        pred = self(tokens)
        mse = F.mse_loss(pred, target)
        return {"loss": denoise + mse, "mse": mse, "denoise": denoise, "pred": pred}


__all__ = ["DiffusionHead", "GaussianHead", "cosine_alphas_cumprod"]
