"""``ego`` observation: the ego's kinematic state, command and recent path as one float32 vector.

Layout (21 values, float32; all in the *current* ego frame: rear axle, x forward, y left):

====  ==========================  ===========  ==============================================================
idx   name                        units        bounds
====  ==========================  ===========  ==============================================================
0-1   velocity vx, vy             m/s          [-70, 70]
2-3   acceleration ax, ay         m/s^2        [-30, 30]
4-7   command one-hot             -            {0, 1}, order left, straight, right, unknown (``COMMANDS``)
8-19  history poses 4 x (x, y, yaw) m, m, rad  xy in [-200, 200], yaw in [-pi, pi]; at t-1.5, t-1.0, t-0.5, t
                                               (the last pose is always (0, 0, 0))
20    speed |v|                   m/s          [0, 100]
====  ==========================  ===========  ==============================================================

Values are clipped into the bounds so the vector always lies in its space.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from irlvla_gym.obs.base import ObservationType
from irlvla_gym.obs.common import EgoStatus, as_pose, rotate_to_ego
from irlvla_gym.scenes.scene import COMMANDS, MAX_ACCEL, MAX_SPEED, NUM_HISTORY, Scene, wrap_angle

EGO_FIELDS: tuple[str, ...] = (
    ("vx", "vy", "ax", "ay") + tuple(f"command_{c}" for c in COMMANDS)
    + tuple(f"history_{k}_{f}" for k in range(NUM_HISTORY) for f in ("x", "y", "yaw")) + ("speed",)
)
"""Names of the ``ego`` vector entries, in order."""
EGO_DIM = len(EGO_FIELDS)
VELOCITY, ACCELERATION, COMMAND, HISTORY, SPEED = slice(0, 2), slice(2, 4), slice(4, 8), slice(8, 20), 20
HISTORY_BOUND = 200.0  # m
SPEED_BOUND = 100.0  # m/s (>= sqrt(2) * MAX_SPEED)


def _bounds() -> tuple[np.ndarray, np.ndarray]:
    low = np.empty(EGO_DIM, np.float32)
    high = np.empty(EGO_DIM, np.float32)
    low[VELOCITY], high[VELOCITY] = -MAX_SPEED, MAX_SPEED
    low[ACCELERATION], high[ACCELERATION] = -MAX_ACCEL, MAX_ACCEL
    low[COMMAND], high[COMMAND] = 0.0, 1.0
    hist_low = np.tile(np.array([-HISTORY_BOUND, -HISTORY_BOUND, -np.pi], np.float32), NUM_HISTORY)
    low[HISTORY], high[HISTORY] = hist_low, -hist_low
    low[SPEED], high[SPEED] = 0.0, SPEED_BOUND
    return low, high


EGO_LOW, EGO_HIGH = _bounds()


def ego_vector(status: EgoStatus) -> np.ndarray:
    """(21,) float32 ego vector (layout in the module docs) from an :class:`EgoStatus`."""
    out = np.zeros(EGO_DIM, np.float64)
    out[VELOCITY] = status.velocity
    out[ACCELERATION] = status.acceleration
    out[COMMAND.start + int(status.command)] = 1.0
    history = np.asarray(status.history, np.float64)
    current = history[-1]
    local = np.empty_like(history)
    local[:, :2] = rotate_to_ego(history[:, :2] - current[:2], current[2])
    local[:, 2] = wrap_angle(history[:, 2] - current[2])
    out[HISTORY] = local.reshape(-1)
    out[SPEED] = np.hypot(*status.velocity)
    return np.clip(out, EGO_LOW, EGO_HIGH).astype(np.float32)


class EgoObservation(ObservationType):
    """Key ``ego``: (21,) float32 kinematics + command one-hot + history (see module docs)."""

    key = "ego"

    def space(self) -> gym.spaces.Dict:
        return gym.spaces.Dict({"ego": gym.spaces.Box(EGO_LOW, EGO_HIGH, (EGO_DIM,), np.float32)})

    def observe(self, scene: Scene, ego_pose: np.ndarray | None = None, time: float = 0.0,
                ego_status: EgoStatus | None = None) -> dict[str, np.ndarray]:
        status = ego_status if ego_status is not None else EgoStatus.from_scene(scene, as_pose(ego_pose))
        return {"ego": ego_vector(status)}
