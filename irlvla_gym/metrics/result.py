"""Result type of the scorer and its one final aggregation.

An implementation (``reference.py`` or the vectorised ``vectorised.py``) fills the per-row evaluation (sub-scores
before EP normalisation and the per-step flags behind them); :func:`finalize_rows` then normalises EP, applies the
human false-positive filter and computes EPDMS / PDMS exactly as navsim/.../scoring/pdm_scorer.py
``_aggregate_scores`` and navsim/evaluate/pdm_score.py do (deviations listed in README.md). :func:`finalize` is its
single-scene form (K plans sharing a reference and a human).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from irlvla_gym.metrics.config import COMFORT_NAMES, EC_NAMES, MULTIPLICATIVE, SUB_SCORES, ScorerConfig
from irlvla_gym.metrics.progress import normalise_progress
from irlvla_gym.scenes.scene import AGENT_CATEGORIES

# Collision classes, navsim/.../scoring/pdm_scorer_utils.py CollisionType.
STOPPED_EGO, STOPPED_TRACK, ACTIVE_FRONT, ACTIVE_REAR, ACTIVE_LATERAL = range(5)
COLLISION_TYPES = ("stopped_ego", "stopped_track", "active_front", "active_rear", "active_lateral")


@dataclass
class ScoreResult:
    """Scores of K plans in one scene, with the per-step evidence behind them. All arrays lead with K.

    Sub-scores (K,) float64: ``nc`` (0/0.5/1), ``dac``, ``ddc`` (0/0.5/1), ``tlc``, ``ep`` ([0, 1]), ``ttc``, ``lk``,
    ``hc``, ``ec`` (1 where there is no previous plan; then ``has_ec`` is False and EC has weight 0).
    Aggregates: ``epdms`` (K,), ``pdms`` (K,) (NAVSIM v1: NC * DAC * (5 EP + 5 TTC + 2 HC) / 12, unfiltered).

    Evidence:
        progress: (K,) m along the route centreline (clipped >= 0); ``ep_normaliser`` (K,) m.
        multiplicative: (K,) NC * DAC * DDC * TLC before the human filter.
        collision_step / collision_agent / collision_type / collision_category: (K,) int, the earliest at-fault
            collision (-1 when none); type indexes :data:`COLLISION_TYPES`, category :data:`AGENT_CATEGORIES`.
        at_fault_collision: (K, 41) bool, steps with a counted at-fault collision.
        non_drivable / multiple_lanes / oncoming / in_intersection: (K, 41) bool ego-area flags.
        red_light: (K, 41) bool, ego polygon intersects a red on-route connector.
        oncoming_progress: (K,) m, max oncoming displacement in a rolling 1 s window (DDC's quantity).
        lk_deviation: (K, 41) m, centre distance to the centreline of the nearest lane containing it (inf if none).
        ttc_infraction: (K, 41) bool; ttc_step / ttc_agent (K,) int, earliest infraction (-1 when none).
        comfort_ok / comfort_min / comfort_max: (K, 6) over :data:`COMFORT_NAMES` (history + plan).
        ec_rms: (K, 4) over :data:`EC_NAMES` (NaN without a previous plan).
        human: the human (expert) trajectory's sub-scores when the filter ran, else None.
        filtered: names of sub-scores the human filter set to 1 (for all plans).
        unfiltered: sub-scores before the human filter.
    """

    nc: np.ndarray
    dac: np.ndarray
    ddc: np.ndarray
    tlc: np.ndarray
    ep: np.ndarray
    ttc: np.ndarray
    lk: np.ndarray
    hc: np.ndarray
    ec: np.ndarray
    progress: np.ndarray
    collision_step: np.ndarray
    collision_agent: np.ndarray
    collision_type: np.ndarray
    collision_category: np.ndarray
    at_fault_collision: np.ndarray
    non_drivable: np.ndarray
    multiple_lanes: np.ndarray
    oncoming: np.ndarray
    in_intersection: np.ndarray
    red_light: np.ndarray
    oncoming_progress: np.ndarray
    lk_deviation: np.ndarray
    ttc_infraction: np.ndarray
    ttc_step: np.ndarray
    ttc_agent: np.ndarray
    comfort_ok: np.ndarray
    comfort_min: np.ndarray
    comfort_max: np.ndarray
    ec_rms: np.ndarray
    has_ec: bool = False
    dt: float = 0.1
    epdms: np.ndarray = field(default_factory=lambda: np.zeros(0))
    pdms: np.ndarray = field(default_factory=lambda: np.zeros(0))
    multiplicative: np.ndarray = field(default_factory=lambda: np.zeros(0))
    ep_normaliser: np.ndarray = field(default_factory=lambda: np.zeros(0))
    human: dict[str, float] | None = None
    filtered: tuple[str, ...] = ()
    unfiltered: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def num_plans(self) -> int:
        return len(self.nc)

    def subscores(self) -> dict[str, np.ndarray]:
        """name -> (K,) for the nine sub-scores."""
        return {name: getattr(self, name) for name in SUB_SCORES}

    def first_values(self, names: tuple[str, ...]) -> list[float]:
        """Plan 0's value of each field ``names`` (K >= 1), as Python floats (the human filter's read)."""
        return [float(getattr(self, n)[0]) for n in names]

    def take(self, k: int) -> dict[str, float]:
        """Sub-scores and aggregates of plan k as plain floats."""
        out = {name: float(getattr(self, name)[k]) for name in SUB_SCORES}
        out["epdms"], out["pdms"] = float(self.epdms[k]), float(self.pdms[k])
        return out

    def explain(self, k: int) -> str:
        """Human-readable reasons for plan k's score (why a multiplicative sub-score zeroed it, and what else lost
        points)."""
        dt = self.dt
        lines = [f"plan {k}: EPDMS {self.epdms[k]:.3f} (PDMS {self.pdms[k]:.3f})"]
        if self.nc[k] < 1:
            t = int(self.collision_step[k])
            cat = int(self.collision_category[k])
            kind = COLLISION_TYPES[int(self.collision_type[k])]
            why = {"active_front": "ego's front bumper hit it",
                   "stopped_track": "it was stopped or static",
                   "active_lateral": "lateral contact while ego straddled lanes or left the drivable area"}.get(
                       kind, kind)
            lines.append(f"  NC {self.nc[k]:g}: at-fault collision with agent {int(self.collision_agent[k])} "
                         f"({AGENT_CATEGORIES[cat] if cat >= 0 else '?'}) at t={t * dt:.1f} s: {why}")
        if self.dac[k] < 1:
            steps = np.flatnonzero(self.non_drivable[k])
            lines.append(f"  DAC 0: a corner left the drivable area at t={steps[0] * dt:.1f} s "
                         f"({len(steps)} steps off-road)" if len(steps) else "  DAC 0")
        if self.ddc[k] < 1:
            lines.append(f"  DDC {self.ddc[k]:g}: {self.oncoming_progress[k]:.2f} m against traffic within 1 s "
                         "(limits 2 m / 6 m)")
        if self.tlc[k] < 1:
            steps = np.flatnonzero(self.red_light[k])
            lines.append(f"  TLC 0: entered a red on-route connector at t={steps[0] * dt:.1f} s"
                         if len(steps) else "  TLC 0")
        if self.ep[k] < 1:
            lines.append(f"  EP {self.ep[k]:.3f}: progress {self.progress[k]:.1f} m of "
                         f"{self.ep_normaliser[k]:.1f} m")
        if self.ttc[k] < 1:
            t = int(self.ttc_step[k])
            lines.append(f"  TTC 0: time to collision < 1 s with agent {int(self.ttc_agent[k])} at t={t * dt:.1f} s")
        if self.lk[k] < 1:
            lines.append(f"  LK 0: centre > 0.5 m off the lane centreline for 2 s (max deviation "
                         f"{np.max(self.lk_deviation[k]):.2f} m)")
        if self.hc[k] < 1:
            bad = [f"{n} in [{lo:.2f}, {hi:.2f}]" for n, ok, lo, hi in
                   zip(COMFORT_NAMES, self.comfort_ok[k], self.comfort_min[k], self.comfort_max[k]) if not ok]
            lines.append("  HC 0: comfort bound exceeded: " + ", ".join(bad))
        if self.has_ec and self.ec[k] < 1:
            lines.append("  EC 0: inconsistent with the previous plan, RMS " + ", ".join(
                f"{n}={v:.2f}" for n, v in zip(EC_NAMES, self.ec_rms[k])))
        if self.filtered:
            lines.append(f"  human filter set to 1: {', '.join(self.filtered)}")
        if len(lines) == 1:
            lines.append("  no infraction")
        return "\n".join(lines)


def finalize_rows(result: ScoreResult, config: ScorerConfig, reference_progress: np.ndarray,
                  human_zero: np.ndarray | None, has_ec: np.ndarray) -> dict[str, np.ndarray]:
    """The final aggregation, row by row: EP against each row's reference, each row's human filter, EPDMS with or
    without EC per row, PDMS.

    EP (pdm_scorer.py ``_aggregate_scores``; epdms.md; :func:`irlvla_gym.metrics.progress.normalise_progress`):
    normaliser = max(reference, progress x multiplicative product); EP = clip(progress / normaliser, 0, 1) when the
    normaliser exceeds 5 m, else 1. Human filter (navsim/evaluate/pdm_score.py, v2): sub-scores in
    ``config.human_filtered`` where the row's human (expert) scored exactly 0 are set to 1.

    Args:
        result: raw evaluation of R rows (:func:`irlvla_gym.metrics.score_rows` / ``score_scene``); ``ep``,
            ``multiplicative``, ``ep_normaliser`` and ``unfiltered`` are written, the other sub-scores are left
            as evaluated (unfiltered; :func:`finalize` writes the filtered ones).
        reference_progress: (R,) EP reference (m) per row (PDM-Closed progress x its product).
        human_zero: :func:`human_zero_mask` (R, len(config.human_filtered)) or None (no filter).
        has_ec: (R,) bool, rows with EC (EPDMS divisor 16 instead of 14).

    Returns:
        name -> (R,) float64: the nine sub-scores (filtered), ``epdms``, ``pdms``, ``progress``.
    """
    product = result.nc * result.dac * result.ddc * result.tlc
    result.ep, result.ep_normaliser = normalise_progress(
        result.progress, product, np.asarray(reference_progress, np.float64), config)
    result.multiplicative = product
    unfiltered = {name: getattr(result, name).copy() for name in SUB_SCORES}
    result.unfiltered = unfiltered
    sub = dict(unfiltered)
    if human_zero is not None:
        for j, name in enumerate(config.human_filtered):
            if human_zero[:, j].any():
                sub[name] = np.where(human_zero[:, j], 1.0, sub[name])
    has_ec = np.asarray(has_ec, bool)
    if has_ec.all() or not has_ec.any():
        total = epdms(sub, config, has_ec=bool(has_ec.all()) and len(has_ec) > 0)
    else:  # EPDMS over 16 or 14 weights, per row
        total = np.empty(len(product))
        for flag in (False, True):
            rows = np.flatnonzero(has_ec == flag)
            total[rows] = epdms({n: v[rows] for n, v in sub.items()}, config, has_ec=flag)
    u = unfiltered
    out = dict(sub)
    out["epdms"] = total
    out["pdms"] = u["nc"] * u["dac"] * (5.0 * u["ep"] + 5.0 * u["ttc"] + 2.0 * u["hc"]) / 12.0
    out["progress"] = result.progress
    return out


def human_zero_mask(humans: Sequence[ScoreResult | None], config: ScorerConfig) -> np.ndarray:
    """(R, len(config.human_filtered)) bool: the row's human (expert) evaluation scored exactly 0 on that
    sub-score, so the filter sets it to 1 (all False for rows without a human)."""
    names = tuple(config.human_filtered)
    none = [False] * len(names)
    # first_values: a persisted evaluation (irlvla_gym.envs.prepared) reads its six fields in one call; one array
    # from the rows' lists, not one assignment per row (a step of a large pool: ~250 rows of new scenes)
    rows = [none if h is None else [v == 0.0 for v in h.first_values(names)] for h in humans]
    return np.array(rows, bool).reshape(len(humans), len(names))


def finalize(result: ScoreResult, config: ScorerConfig, *, reference_progress: float | None = None,
             human: ScoreResult | None = None) -> ScoreResult:
    """:func:`finalize_rows` for K plans of one scene (in place; returns ``result``).

    ``reference_progress`` is PDM-Closed's progress x its product (m). When it is None the batch stands in for
    PDM-Closed: the reference is the largest ``progress_k x product_k`` over the K candidates (like NAVSIM scoring
    PDM-Closed and the model in one batch). ``human``: the raw evaluation of the logged expert (one row); its zero
    sub-scores are neutralised for every plan, recorded in ``result.human`` / ``result.filtered``.
    """
    K = len(result.nc)
    if reference_progress is None:
        weighted = result.progress * (result.nc * result.dac * result.ddc * result.tlc)
        reference = np.full(K, weighted.max() if K else 0.0)
    else:
        reference = np.full(K, float(reference_progress))
    human_zero = None
    if human is not None:
        result.human = {name: float(getattr(human, name)[0]) for name in SUB_SCORES}
        result.filtered = tuple(n for n in config.human_filtered if result.human[n] == 0.0)
        if result.filtered:
            zero = np.array([n in result.filtered for n in config.human_filtered])
            human_zero = np.broadcast_to(zero, (K, len(zero)))
    out = finalize_rows(result, config, reference, human_zero, np.full(K, result.has_ec))
    for name in SUB_SCORES:
        setattr(result, name, out[name])
    result.epdms, result.pdms = out["epdms"], out["pdms"]
    return result


def epdms(sub: dict[str, np.ndarray], config: ScorerConfig, *, has_ec: bool) -> np.ndarray:
    """EPDMS = NC * DAC * DDC * TLC * (5 EP + 5 TTC + 2 LK + 2 HC [+ 2 EC]) / (14 [+ 2])."""
    product = np.prod([sub[n] for n in MULTIPLICATIVE], axis=0)
    weights = {"ep": config.weight_ep, "ttc": config.weight_ttc, "lk": config.weight_lk, "hc": config.weight_hc}
    if has_ec:
        weights["ec"] = config.weight_ec
    weighted = sum(w * sub[n] for n, w in weights.items()) / sum(weights.values())
    return product * weighted


def two_stage_score(stage1: np.ndarray, stage1_endpoints: np.ndarray, stage2_scores: list[np.ndarray],
                    stage2_starts: list[np.ndarray], variance: float = 0.1) -> float:
    """navhard two-stage aggregation (navsim/evaluate/pdm_score.py ``compute_two_stage`` logic).

    Args:
        stage1: (G,) stage-1 EPDMS per group (scene).
        stage1_endpoints: (G, 2) the stage-1 plan's 4 s endpoint (m), in the frame of the stage-2 starts.
        stage2_scores: G arrays (M_g,) EPDMS of the stage-2 scenes of group g.
        stage2_starts: G arrays (M_g, 2) start positions of those scenes (m).
        variance: Gaussian weight exp(-d^2 / (2 variance)), d in m.

    Returns:
        mean over groups of stage1_g x (weighted mean of stage-2 scores). Weights fall back to uniform when they
        sum to ~0 (all stage-2 starts far from the endpoint); a group without stage-2 scenes keeps its stage-1
        score alone.
    """
    totals = []
    for g, s1 in enumerate(np.asarray(stage1, np.float64)):
        scores = np.asarray(stage2_scores[g], np.float64)
        if scores.size == 0:
            totals.append(s1)
            continue
        d2 = np.sum((np.asarray(stage2_starts[g], np.float64) - stage1_endpoints[g]) ** 2, axis=-1)
        w = np.exp(-d2 / (2.0 * variance))
        w = w / w.sum() if w.sum() > 1e-12 else np.full(len(scores), 1.0 / len(scores))
        totals.append(s1 * float(np.dot(w, scores)))
    return float(np.mean(totals)) if totals else float("nan")


def empty_result(K: int, T: int) -> ScoreResult:
    """A result with neutral values (all ones, no flags) for an implementation to fill."""
    ones, neg = np.ones(K), -np.ones(K, np.int64)
    f = np.zeros((K, T), bool)
    return ScoreResult(
        nc=ones.copy(), dac=ones.copy(), ddc=ones.copy(), tlc=ones.copy(), ep=ones.copy(), ttc=ones.copy(),
        lk=ones.copy(), hc=ones.copy(), ec=ones.copy(), progress=np.zeros(K), collision_step=neg.copy(),
        collision_agent=neg.copy(), collision_type=neg.copy(), collision_category=neg.copy(),
        at_fault_collision=f.copy(), non_drivable=f.copy(), multiple_lanes=f.copy(), oncoming=f.copy(),
        in_intersection=f.copy(), red_light=f.copy(), oncoming_progress=np.zeros(K), lk_deviation=np.zeros((K, T)),
        ttc_infraction=f.copy(), ttc_step=neg.copy(), ttc_agent=neg.copy(), comfort_ok=np.ones((K, 6), bool),
        comfort_min=np.zeros((K, 6)), comfort_max=np.zeros((K, 6)), ec_rms=np.full((K, 4), np.nan))


def replace(result: ScoreResult, **changes) -> ScoreResult:
    return dataclasses.replace(result, **changes)
