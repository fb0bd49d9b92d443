"""Simulation: plan tracking (LQR + kinematic bicycle, batched over K plans), box geometry and traffic models
(log replay, reactive IDM agents), faithful to NAVSIM v2's PDM simulation (see each module's docstring)."""

from irlvla_gym.sim.config import IDMParams, SimConfig, TrafficConfig
from irlvla_gym.sim.geometry import agent_corners, ego_boxes, ego_centers, ego_corners
from irlvla_gym.sim.interpolation import interpolate_plan
from irlvla_gym.sim.state import STATE_FIELDS, StateIndex
from irlvla_gym.sim.tracker import initial_state, simulate_plans
from irlvla_gym.sim.traffic import AgentTrack, IDMTraffic, idm_acceleration, log_replay, simulate_idm_agents

__all__ = [
    "IDMParams", "SimConfig", "TrafficConfig", "StateIndex", "STATE_FIELDS", "agent_corners", "ego_boxes",
    "ego_centers", "ego_corners", "interpolate_plan", "initial_state", "simulate_plans",
    "AgentTrack", "IDMTraffic", "idm_acceleration", "log_replay", "simulate_idm_agents",
]
