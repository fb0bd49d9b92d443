"""Thresholds and weights of the EPDMS scorer, one frozen dataclass (defaults = NAVSIM v2.2).

Every number cites the NAVSIM place it mirrors; ``../shared/docs/epdms.md`` restates them.
"""

from __future__ import annotations

from dataclasses import dataclass

# Sub-score names in the order they appear in :class:`irlvla_gym.metrics.result.ScoreResult`.
MULTIPLICATIVE = ("nc", "dac", "ddc", "tlc")
WEIGHTED = ("ep", "ttc", "lk", "hc", "ec")
SUB_SCORES = MULTIPLICATIVE + WEIGHTED

# Comfort quantities (columns of ``ScoreResult.comfort_values``), bounds from
# navsim/planning/simulation/planner/pdm_planner/scoring/pdm_comfort_metrics.py.
COMFORT_NAMES = ("lon_accel", "lat_accel", "jerk", "lon_jerk", "yaw_accel", "yaw_rate")
EC_NAMES = ("accel", "jerk", "yaw_rate", "yaw_accel")


@dataclass(frozen=True)
class ScorerConfig:
    """All knobs of the scorer. Units: m, s, rad, m/s, m/s^2.

    Attributes mirror ``PDMScorerConfig`` (navsim/.../scoring/pdm_scorer.py) unless noted.
    """

    dt: float = 0.1  # simulation step (s); 41 states cover t = 0 .. 4 s
    num_states: int = 41

    # NC: nuplan/planning/metrics/utils/collision_utils.py (stopped_speed_threshold 5e-2)
    collision_stopped_speed: float = 5e-2
    ahead_angle_deg: float = 30.0  # is_agent_ahead
    behind_angle_deg: float = 150.0  # is_agent_behind
    static_collision_score: float = 0.5  # at-fault collision with a static object

    # TTC: PDMScorerConfig.stopped_speed_threshold = 5e-3, future_time_idcs = np.arange(0, 10, 3)
    ttc_stopped_speed: float = 5e-3
    ttc_num_steps: int = 32  # steps 0..31, so t + 0.9 s stays inside the 4 s horizon
    ttc_projection_steps: tuple[int, ...] = (0, 3, 6, 9)

    # DDC: driving_direction_horizon 1.0 s, compliance 2 m, violation 6 m
    ddc_window_s: float = 1.0
    ddc_compliance_m: float = 2.0
    ddc_violation_m: float = 6.0

    # EP: progress_distance_threshold 5 m
    progress_distance_threshold: float = 5.0
    ep_numerator_times_product: bool = False
    """False (epdms.md): EP = progress / normaliser. True (the NAVSIM code): the numerator is also multiplied by the
    plan's own multiplicative product, ``raw_progress = progress * multi; EP = raw_progress / max(raw_progress)``."""

    # LK: lane_keeping_deviation_limit 0.5 m, lane_keeping_horizon_window 2.0 s
    lk_max_deviation_m: float = 0.5
    lk_window_steps: int = 20

    # HC: pdm_comfort_metrics.py bounds; 1.5 s of logged history prepended
    history_s: float = 1.5
    min_lon_accel: float = -4.05
    max_lon_accel: float = 2.40
    max_abs_lat_accel: float = 4.89
    max_abs_jerk: float = 8.37
    max_abs_lon_jerk: float = 4.13
    max_abs_yaw_accel: float = 1.93
    max_abs_yaw_rate: float = 0.95
    accel_window: int = 8  # Savitzky-Golay window for accelerations (poly order 2)
    derivative_window: int = 15  # nuPlan default window for jerk / yaw-rate derivatives
    accel_poly_order: int = 2
    yaw_accel_poly_order: int = 3  # nuPlan _compute_yaw_accel

    # EC: two-frame extended comfort, previous plan 0.5 s older (5 steps), 36 overlapping states
    ec_shift_steps: int = 5
    ec_max_accel_rms: float = 0.7
    ec_max_jerk_rms: float = 0.5
    ec_max_yaw_rate_rms: float = 0.1
    ec_max_yaw_accel_rms: float = 0.1

    # EPDMS weights (pdm_scorer.py WeightedMetricIndex weights)
    weight_ep: float = 5.0
    weight_ttc: float = 5.0
    weight_lk: float = 2.0
    weight_hc: float = 2.0
    weight_ec: float = 2.0

    # Human false-positive filter: sub-scores where the logged human got exactly 0 are set to 1 for the agent.
    human_filtered: tuple[str, ...] = ("nc", "dac", "ddc", "tlc", "ttc", "lk", "hc")

    # Two-stage aggregation: weight exp(-d^2 / (2 * variance)), d in m
    two_stage_variance: float = 0.1

    @property
    def ddc_window_steps(self) -> int:
        """Displacement increments in the rolling DDC window (10 at 0.1 s)."""
        return int(round(self.ddc_window_s / self.dt))

    @property
    def history_steps(self) -> int:
        """0.1 s history states prepended for HC (15 for t = -1.5 .. -0.1 s)."""
        return int(round(self.history_s / self.dt))


DEFAULT_CONFIG = ScorerConfig()
