"""Subspace Gaussian exploration for the VLA's plan head: SB3 distribution over smooth plan changes.

``VLAPolicy(..., exploration="smooth")`` samples ``action = mean + coeff @ basis`` with ``coeff ~ N(0, diag(std^2))``
over the D smooth directions of :mod:`irlvla_gym.plans.exploration` (basis (D, 24), normalised action units), instead
of SB3's diagonal Gaussian over all 24 numbers. The distribution is a Gaussian on the affine subspace through the mean:
the log-likelihood of an action is that of its coefficients ``coeff = (action - mean) @ pinv(basis)``, the least-squares
projection, so a PPO ratio only sees how the mean moved *along* the directions (changes of the mean across them are
not penalised nor rewarded: the BC anchor or the KL anchor keeps them in check). ``log_std`` has D entries, in the
directions' physical units (log m/s^2, log m/s^3).

Why: sampled plans stay comfortable and the learned reward ranks them far better than jerky diagonal-noise samples
(see :mod:`irlvla_gym.plans.exploration`), so PPO's advantage points somewhere useful.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
from stable_baselines3.common.distributions import DiagGaussianDistribution
from torch import nn

EXPLORATIONS = ("diagonal", "smooth", "smooth-speed")
"""``VLAPolicy`` exploration kinds: SB3's diagonal Gaussian over the 24 numbers, the smooth subspace, or the smooth
subspace with lateral stds scaled by the ego's speed (:func:`irlvla_gym.plans.exploration.direction_speed_factors`;
needs the raw ``ego`` observation)."""
SUBSPACE_EXPLORATIONS = ("smooth", "smooth-speed")


class SubspaceGaussianDistribution(DiagGaussianDistribution):
    """Gaussian over D coefficients of a fixed (D, A) basis, shifted by a mean action (B, A).

    A subclass of SB3's ``DiagGaussianDistribution`` so SB3's ``ActorCriticPolicy`` passes it ``(mean, log_std)``
    unchanged; ``log_std`` is (D,) here.

    Args:
        basis: (D, A) directions in action units. action_dim: A.

    ``proba_distribution`` takes ``log_std`` (D,) or per-row (B, D) (state-dependent scales, e.g. speed-scaled
    lateral directions; the row factor's log-determinant cancels in PPO's ratio).
    """

    def __init__(self, basis: np.ndarray | torch.Tensor, action_dim: int):
        super().__init__(action_dim)
        basis = torch.as_tensor(np.asarray(basis, np.float32))
        if basis.ndim != 2 or basis.shape[1] != action_dim:
            raise ValueError(f"basis: expected shape (D, {action_dim}), got {tuple(basis.shape)}")
        self.basis = basis
        self.pinv = torch.linalg.pinv(basis)  # (A, D): coeff = delta @ pinv
        self.mean: torch.Tensor | None = None

    @property
    def num_directions(self) -> int:
        return int(self.basis.shape[0])

    def proba_distribution_net(self, latent_dim: int, log_std_init: float = 0.0) -> tuple[nn.Module, nn.Parameter]:
        return nn.Linear(latent_dim, self.action_dim), nn.Parameter(torch.full((self.num_directions,),
                                                                               float(log_std_init)))

    def proba_distribution(self, mean_actions: torch.Tensor, log_std: torch.Tensor) -> "SubspaceGaussianDistribution":
        if log_std.shape[-1] != self.num_directions:
            raise ValueError(f"log_std: expected {self.num_directions} entries (one per direction), "
                             f"got {tuple(log_std.shape)}")
        self.basis = self.basis.to(mean_actions)
        self.pinv = self.pinv.to(mean_actions)
        self.mean = mean_actions
        # over the coordinates of the action along the directions: torch's KL / log-prob of two such distributions
        # (e.g. a KL anchor to a frozen reference policy) then compare the means' projections
        std = log_std.exp().expand(mean_actions.shape[0], -1)
        self.distribution = torch.distributions.Normal(mean_actions @ self.pinv, std)
        return self

    def coefficients(self, actions: torch.Tensor) -> torch.Tensor:
        """(B, D) coordinates of ``actions - mean`` along the directions (least squares)."""
        return (actions - self.mean) @ self.pinv

    def log_prob(self, actions: torch.Tensor) -> torch.Tensor:
        return self.distribution.log_prob(actions @ self.pinv).sum(dim=-1)

    def entropy(self) -> torch.Tensor:
        return self.distribution.entropy().sum(dim=-1)

    def sample(self) -> torch.Tensor:
        noise = self.distribution.rsample() - self.distribution.mean
        return self.mean + noise @ self.basis

    def mode(self) -> torch.Tensor:
        return self.mean


def smooth_log_std_init(std: Sequence[float] | None = None, directions: Sequence[str] | None = None) -> torch.Tensor:
    """(D,) initial log-std of the smooth ``directions`` (default all; std default: their entries of
    :data:`irlvla_gym.plans.exploration.SMOOTH_STD`)."""
    from irlvla_gym.plans.exploration import SMOOTH_DIRECTIONS, SMOOTH_STD

    directions = tuple(directions or SMOOTH_DIRECTIONS)
    unknown = [d for d in directions if d not in SMOOTH_DIRECTIONS]
    if unknown:
        raise ValueError(f"exploration_directions: unknown direction(s) {unknown}; choose from {SMOOTH_DIRECTIONS}")
    default = tuple(SMOOTH_STD[SMOOTH_DIRECTIONS.index(d)] for d in directions)
    values = default if std is None else tuple(float(s) for s in std)
    if len(values) != len(directions):
        raise ValueError(f"exploration_std: expected {len(directions)} values (one per direction {directions}), "
                         f"got {len(values)}")
    if any(not (s > 0 and math.isfinite(s)) for s in values):
        raise ValueError(f"exploration_std: every std must be a positive finite number, got {values}")
    return torch.log(torch.tensor(values, dtype=torch.float32))


__all__ = ["EXPLORATIONS", "SUBSPACE_EXPLORATIONS", "SubspaceGaussianDistribution", "smooth_log_std_init"]
