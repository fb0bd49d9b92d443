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

    # DDC: driving_direction_horizon 1.0 s, compliance 2 m, violation 6 m. NAVSIM sums the displacements of steps
    # t - 10 .. t (``oncoming_progress[:, max(0, t - horizon): t + 1]``): 11 increments, see ddc_window_steps.
    ddc_window_s: float = 1.0
    ddc_compliance_m: float = 2.0
    ddc_violation_m: float = 6.0

    # EP: progress_distance_threshold 5 m
    progress_distance_threshold: float = 5.0
    ep_numerator_times_product: bool = False
    """False (epdms.md and current NAVSIM, ``PDMScorer._aggregate_pdm_scores``): EP = progress / normaliser, the
    normaliser being max(progress x product). True (an older variant): the numerator is also multiplied by the
    plan's own multiplicative product."""

    # LK: lane_keeping_deviation_limit 0.5 m, lane_keeping_horizon_window 2.0 s (ceil(2.0 / 0.1) = 20 steps); the
    # deviation is the distance of the box centre to the route centreline (PDM-Closed's centreline in NAVSIM).
    lk_max_deviation_m: float = 0.5
    lk_window_steps: int = 20

    # HC: pdm_comfort_metrics.py bounds; 1.5 s of logged history prepended. NAVSIM samples the past trajectory at
    # -1.5 .. -0.1 s and drops the last sample (pdm_scorer._calculate_history_comfort: ``history_time_us[:-1]``), so
    # 14 states (-1.5 .. -0.2 s) precede the 41 simulated ones.
    history_s: float = 1.5
    min_lon_accel: float = -4.05
    max_lon_accel: float = 2.40
    max_abs_lat_accel: float = 4.89
    max_abs_jerk: float = 8.37
    max_abs_lon_jerk: float = 4.13
    max_abs_yaw_accel: float = 1.93
    max_abs_yaw_rate: float = 0.95
    accel_window: int = 8  # Savitzky-Golay window for accelerations (poly order 2)
    derivative_window: int = 15  # jerk derivative window (_extract_ego_jerk passes 15)
    yaw_derivative_window: int = 5
    """Yaw rate / yaw acceleration window: ``_extract_ego_yaw_rate`` does not pass its ``window_length`` (15) on, so
    ``_approximate_derivatives`` uses its own default of 5."""
    accel_poly_order: int = 2
    yaw_accel_poly_order: int = 3  # _compute_yaw_accel (HC)
    ec_yaw_accel_poly_order: int = 2  # extract_features (EC) calls _extract_ego_yaw_rate(deriv_order=2), poly 2
    lon_accel_at_centre: bool = True
    """NAVSIM moves the longitudinal/lateral accelerations from the rear axle to the box centre
    (``state_array_to_center_state_array``: a_x + d (yaw_rate^2 + yaw_accel), d = rear axle to centre) before the
    HC bounds; the magnitude used for jerk and EC stays at the rear axle."""

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
    # NAVSIM scores the human without its past trajectory (pdm_score passes no human_past_trajectory), so the
    # human's HC is always 1 and HC is never filtered.
    human_filtered: tuple[str, ...] = ("nc", "dac", "ddc", "tlc", "ttc", "lk")

    # Two-stage aggregation: weight exp(-d^2 / (2 * variance)), d in m
    two_stage_variance: float = 0.1

    @property
    def ddc_window_steps(self) -> int:
        """Displacement increments in the rolling DDC window: steps t - 10 .. t, 11 at 0.1 s (NAVSIM's slice
        ``max(0, t - horizon) : t + 1`` with horizon = 1.0 s / 0.1 s)."""
        return int(round(self.ddc_window_s / self.dt)) + 1

    @property
    def history_steps(self) -> int:
        """0.1 s logged history states kept per scene (15 for t = -1.5 .. -0.1 s; the closed-loop envs keep their
        driven trace in the same layout)."""
        return int(round(self.history_s / self.dt))

    @property
    def hc_history_steps(self) -> int:
        """History states prepended for HC: the first 14 of :attr:`history_steps` (-1.5 .. -0.2 s), as NAVSIM."""
        return self.history_steps - 1


DEFAULT_CONFIG = ScorerConfig()
