"""Rule-based planners behind the :class:`Planner` protocol: the logged human, NAVSIM's constant-velocity agent,
standing still and PDM-Closed (also the EP normaliser of the EPDMS scorer, :func:`pdm_reference_progress`)."""

from irlvla_gym.planners.base import PLAN_SHAPE, Planner, PlannerBase
from irlvla_gym.planners.pdm_closed import (
    PDM_IDM_PARAMS, PDMClosedConfig, PDMClosedOutput, PDMClosedPlanner, default_planner, pdm_reference_progress,
)
from irlvla_gym.planners.simple import ConstantVelocityPlanner, HumanPlanner, StandStillPlanner

PLANNERS = {"human": HumanPlanner, "constant_velocity": ConstantVelocityPlanner, "stand_still": StandStillPlanner,
            "pdm_closed": PDMClosedPlanner}
"""Planner classes by name."""


def make_planner(name: str) -> Planner:
    """A planner by name (:data:`PLANNERS`)."""
    try:
        return PLANNERS[name]()
    except KeyError:
        raise ValueError(f"unknown planner {name!r}; choose one of {sorted(PLANNERS)}") from None


__all__ = [
    "PLAN_SHAPE", "PLANNERS", "PDM_IDM_PARAMS", "ConstantVelocityPlanner", "HumanPlanner", "PDMClosedConfig",
    "PDMClosedOutput", "PDMClosedPlanner", "Planner", "PlannerBase", "StandStillPlanner", "default_planner",
    "make_planner", "pdm_reference_progress",
]
