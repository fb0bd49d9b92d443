"""The one episode core of the IRL-VLA envs: episode state as arrays over N rows, and batched reset / step functions.

Every env is this core plus a thin wrapper (Waymax style: the episode logic acts on an explicit state; the wrapper
holds the state):

* the single envs (:class:`~irlvla_gym.envs.navsim_env.NavsimEnv`,
  :class:`~irlvla_gym.envs.closed_loop.NavsimClosedLoopEnv`, ``gym.Env``) are the core with N = 1 and add seeding
  through ``self.np_random`` and rendering;
* the native vector envs (:mod:`irlvla_gym.envs.vector`, ``gym.vector.VectorEnv``) are the core with N rows and add
  autoreset and gymnasium's batched info layout.

:class:`EnvCore` holds what the rows share (config, scene source, per-scene cache, observation builder, action
decoder, reward) and runs the step template (:meth:`EnvCore.step`, highway-env style): decide (simulate the plans)
-> score -> reward -> advance -> terminated / truncated -> observe. What differs between plan-once and closed loop
is a *mode* object with those hooks (:mod:`irlvla_gym.envs.modes`), never a second step function. All functions
take row index arrays, so N single steps and one N-row step run the same code; the tracker, the scorer and the
observation renderer are called once per step for all rows.

The reward is a hook over rows too (:func:`reward_hook`): the built-in EPDMS takes the scorer's columns of all rows;
a custom reward callable is called once per row, or once per step when it has a batched
``score_batch(scenes, plans) -> (M,)`` method.

Per-scene precompute comes from the persisted cache beside a scene store when there is one
(:mod:`irlvla_gym.envs.prepared`: read in ~0.1 ms instead of ~10 ms prepared), and scenes prepared here are written
back to it. Observations of N rows are gathered into reused (N, ...) output arrays (:class:`ObservationBuffers`).
"""

from __future__ import annotations

import functools
import sys
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Protocol, Sequence

import gymnasium as gym
import numpy as np

from irlvla_gym.cache import LRU, shared_lru
from irlvla_gym.envs.config import EnvConfig
from irlvla_gym.envs.prepared import PreparedScenes, open_prepared
from irlvla_gym.envs.scoring import (
    INDEX_RESOLUTION_M, MAX_REPLANS, STEPS_PER_REPLAN, SceneBundle, make_bundle, map_pack_mode, zero_scores,
)
from irlvla_gym.metrics import ScoreResult
from irlvla_gym.obs.registry import ObservationBuilder
from irlvla_gym.plans.codec import ActionType, Decoded, TrajectoryAction, action_to_plan, make_action_type
from irlvla_gym.plans.residual import ResidualAction, ResidualFrame
from irlvla_gym.rewards import make_reward
from irlvla_gym.scenes.geometry import to_local
from irlvla_gym.scenes.scene import Scene
from irlvla_gym.scenes.source import SceneSource

HISTORY_ROWS = 15  # 0.1 s states before t0 in the driven trace (t = -1.5 .. -0.1 s)
TRACE_ROWS = HISTORY_ROWS + 1 + STEPS_PER_REPLAN * MAX_REPLANS  # 56: history, t0, 8 executed 0.5 s pieces


def trace_length(k: np.ndarray | int) -> np.ndarray | int:
    """Valid rows of the driven trace after ``k`` replans: 15 history states, the t0 state, 5 states per replan."""
    return HISTORY_ROWS + 1 + STEPS_PER_REPLAN * k


# ---------------------------------------------------------------------------------------------------------------------
# State and step output
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class EpisodeState:
    """Episode state of N envs, one row per env: arrays over rows, per-row objects in lists of length N.

    Attributes:
        scene_index: (N,) int64 scene of each row in the source; -1 before the row's first reset.
        bundles: N per-scene precomputes (:class:`~irlvla_gym.envs.scoring.SceneBundle`), None before the first
            reset.
        k: (N,) int64 replans executed since t0 (closed loop; always 0 in the plan-once env); time = 0.5 k s.
        trace: (N, TRACE_ROWS, 11) driven simulator states at 0.1 s from t = -1.5 s in the scene's t0 frame (rows
            0..14 the logged history, row 15 the t0 state, then 5 per replan); row i holds ``trace_length(k[i])``
            valid states (closed loop only).
        prev_states: (N, 41, 11) the previous plan's simulated states (for EC), valid where ``has_prev``.
        has_prev: (N,) bool.
        boxes, valid: per row, the agent tracks the closed loop scores against, (T, A, 8) boxes (t0 frame) and (T, A)
            bool over T = 76 steps of 0.1 s from t0: the log replay, or the IDM agents reacting to the driven ego.
        obs_scene: per row, the scene the observation and frames show (IDM agents); None: the bundle's scene.
        obs: per row, the current observation (at t0: the scene's cached read-only arrays, shared, never written).
        text: per row, the current instruction text.
        last_plan: (N, 8, 3) the last plan in the t0 frame (m, rad) for rendering, valid where ``has_plan``.
        has_plan: (N,) bool.
        last_scores: per row, (scores, position) of the last step's ``info["rewards"]`` (rendering); None before.
        obs_out: the reused (N, ...) arrays :meth:`EnvCore.observations` returns (:class:`ObservationBuffers`).
    """

    scene_index: np.ndarray
    bundles: list
    k: np.ndarray
    trace: np.ndarray
    prev_states: np.ndarray
    has_prev: np.ndarray
    boxes: list
    valid: list
    obs_scene: list
    obs: list
    text: list
    last_plan: np.ndarray
    has_plan: np.ndarray
    last_scores: list
    obs_out: ObservationBuffers

    @classmethod
    def empty(cls, n: int) -> EpisodeState:
        """The state of ``n`` rows before their first reset (allocated once; steps write into it)."""
        return cls(np.full(n, -1, np.int64), [None] * n, np.zeros(n, np.int64), np.zeros((n, TRACE_ROWS, 11)),
                   np.zeros((n, 41, 11)), np.zeros(n, bool), [None] * n, [None] * n, [None] * n, [None] * n,
                   [""] * n, np.zeros((n, 8, 3)), np.zeros(n, bool), [None] * n, ObservationBuffers())


def _max_refcount(arrays: Mapping[str, np.ndarray]) -> int:
    """The largest reference count among ``arrays``' values (as seen from inside this function)."""
    return max(sys.getrefcount(a) for a in arrays.values())


_OWNED_REFS = _max_refcount({"probe": np.empty(1)})  # an array held only by one dict, counted the same way


class ObservationBuffers:
    """The (N, ...) arrays a batched env returns its observations in, reused across steps.

    Why: stacking N per-row observations into new arrays every step pays page faults on top of the copy (a
    (256, 8, 128, 128) BEV batch is 33 MB, above malloc's reuse threshold: 7-8 ms per step in the env, 4-5.5 ms into
    a reused array; warm native x256 +4-5 % env-steps/s). Returned arrays are never written again while anyone holds them: a set is reused only when no reference
    to its arrays remains outside this pool (a kept observation, or any view of it, keeps its set busy; then another
    set is used, at most :attr:`POOL` kept, more allocated as needed). So callers may keep, modify or hand on
    observations exactly as before, when every step returned new arrays. All rows are rewritten on each call from
    the rows' current observations (never from a returned set, which its former holder may have modified).
    """

    POOL = 2  # the caller's previous observation plus the one being written

    def __init__(self) -> None:
        self.pool: list[dict[str, np.ndarray]] = []

    def gather(self, rows: Sequence[Mapping[str, np.ndarray]], keys: Sequence[str]) -> dict[str, np.ndarray]:
        """Rows' observations (N dicts of per-key arrays) as one dict of (N, ...) arrays (the caller's to keep)."""
        first = rows[0]
        out = None
        for bufs in self.pool:
            if _max_refcount(bufs) <= _OWNED_REFS and all(
                    bufs[k].shape[1:] == first[k].shape and bufs[k].dtype == first[k].dtype and
                    len(bufs[k]) == len(rows) for k in keys):
                out = bufs
                break
        if out is None:
            out = {k: np.empty((len(rows), *np.shape(first[k])), np.asarray(first[k]).dtype) for k in keys}
            if len(self.pool) < self.POOL:
                self.pool.append(out)
        for k in keys:
            np.stack([o[k] for o in rows], out=out[k])
        return dict(out)


@dataclass
class Decision:
    """What a step's ``decide`` hook made of M plans.

    Attributes:
        world: (M, 8, 3) the plans in the scene's t0 frame (m, rad).
        states: (R, 41, 11) simulated states (0.1 s, t .. t + 4 s) of the M rows at positions ``pos``; None when
            nothing was simulated (plan-once with a custom reward or only invalid actions).
        pos: (R,) int positions (into the M stepped rows) of the simulated rows.
    """

    world: np.ndarray
    states: np.ndarray | None
    pos: np.ndarray


@dataclass
class Scored:
    """The scorer's output for the rows at positions ``pos`` (R of the M stepped rows).

    Attributes:
        pos: (R,) int positions into the stepped rows.
        raw: raw :class:`~irlvla_gym.metrics.ScoreResult` of the R rows (per-step flags, (R, 41)).
        final: name -> (R,) float64: nine sub-scores, ``epdms``, ``pdms``, ``progress`` (m).
    """

    pos: np.ndarray
    raw: ScoreResult
    final: dict[str, np.ndarray]


@dataclass
class ScoreInfo:
    """``info["rewards"]`` of M stepped rows, kept as columns (the vector envs batch them without per-row dicts).

    Row j: invalid action -> every sub-score 0 (:func:`~irlvla_gym.envs.scoring.zero_scores`); custom reward ->
    ``{"custom": value}`` (plus the scorer's columns when ``with_scores``, closed loop); else the scorer's columns.

    Attributes:
        invalid: (M,) bool. final: the scorer's name -> (R,) columns (None if nothing was scored), of the rows at
        positions ``pos`` (R,). custom: (M,) custom reward values or None. with_scores: custom rows also carry the
        scorer's columns. (Only the columns are kept, not the raw per-step result: this outlives the step.)
    """

    invalid: np.ndarray
    final: dict[str, np.ndarray] | None
    pos: np.ndarray | None
    custom: np.ndarray | None
    with_scores: bool

    def full_columns(self) -> dict[str, np.ndarray] | None:
        """The scorer's columns when every row has exactly them (no invalid action, no custom reward), else None."""
        if self.custom is not None or self.final is None or len(self.pos) != len(self.invalid) or self.invalid.any():
            return None
        return self.final

    def row(self, j: int) -> dict[str, float]:
        """The dict of row ``j`` (Python floats)."""
        if self.invalid[j]:
            return zero_scores()
        row = {} if self.custom is None else {"custom": float(self.custom[j])}
        if self.custom is None or self.with_scores:
            # pos is sorted (the scored rows in step order); all rows scored: position = row
            r = j if len(self.pos) == len(self.invalid) else int(np.searchsorted(self.pos, j))
            row.update({name: float(col[r]) for name, col in self.final.items()})
        return row

    def rows(self) -> list[dict[str, float]]:
        """One dict per row (Python floats)."""
        columns = {} if self.final is None else {name: col.tolist() for name, col in self.final.items()}
        where = {} if self.pos is None else {int(p): r for r, p in enumerate(self.pos)}
        custom = None if self.custom is None else self.custom.tolist()
        out = []
        for j, bad in enumerate(self.invalid.tolist()):
            if bad:
                out.append(zero_scores())
                continue
            row = {} if custom is None else {"custom": custom[j]}
            if custom is None or self.with_scores:
                r = where[j]
                row.update({name: col[r] for name, col in columns.items()})
            out.append(row)
        return out


@dataclass
class StepOutput:
    """One batched step of M rows.

    Attributes:
        rewards: (M,) float64. terminated, truncated: (M,) bool.
        info: info key -> column: an (M, ...) array, a list of M objects, or a :class:`ScoreInfo` (``"rewards"``).
    """

    rewards: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    info: dict[str, Any]


def row_info(columns: Mapping[str, Any], j: int) -> dict[str, Any]:
    """The info dict of stepped row ``j`` from info columns (Python scalars, as a single env returns them)."""
    out: dict[str, Any] = {}
    for key, col in columns.items():
        if isinstance(col, ScoreInfo):
            out[key] = col.row(j)
        elif isinstance(col, np.ndarray):
            out[key] = col[j].item() if col.ndim == 1 else col[j].copy()
        else:
            out[key] = col[j]
    return out


# ---------------------------------------------------------------------------------------------------------------------
# Hooks
# ---------------------------------------------------------------------------------------------------------------------


class EpisodeMode(Protocol):
    """The hooks that make an episode plan-once or closed-loop (:mod:`irlvla_gym.envs.modes`). Each acts on the
    stepped rows ``rows`` ((M,) int env indices) of a state; M-arrays are aligned with ``rows``."""

    custom_with_scores: bool  # a custom reward's info also carries the scorer's columns

    def start(self, core: EnvCore, st: EpisodeState, rows: np.ndarray) -> None:
        """Initialise mode-specific state of freshly reset rows (scene, k = 0 and the t0 observation are set)."""

    def decide(self, core: EnvCore, st: EpisodeState, rows: np.ndarray, plans: np.ndarray, invalid: np.ndarray,
               states: np.ndarray | None) -> Decision:
        """Turn the plans (M, 8, 3) (current ego frame) into world plans and simulated states."""

    def score(self, core: EnvCore, st: EpisodeState, rows: np.ndarray, decision: Decision,
              invalid: np.ndarray) -> Scored | None:
        """Score the simulated rows (one scorer call), or None when nothing needs the scorer."""

    def reward_scenes(self, core: EnvCore, st: EpisodeState, rows: np.ndarray) -> list[Scene]:
        """The scenes a custom reward gets for rows ``rows``, in the frame of their plans."""

    def reward_observations(self, core: EnvCore, st: EpisodeState, rows: np.ndarray,
                            builder: ObservationBuilder) -> list[dict[str, np.ndarray]] | None:
        """The rows' observations of a reward model's ``builder`` (None: the mode has none to hand in)."""

    def advance(self, core: EnvCore, st: EpisodeState, rows: np.ndarray, decision: Decision) -> None:
        """Move the rows' episodes on by the executed part of their plans."""

    def terminated(self, core: EnvCore, st: EpisodeState, rows: np.ndarray,
                   scored: Scored | None) -> tuple[np.ndarray, dict[str, Any]]:
        """(M,) bool terminations and their info columns (after ``advance``)."""

    def truncated(self, core: EnvCore, st: EpisodeState, rows: np.ndarray,
                  terminated: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
        """(M,) bool truncations and their info columns."""

    def observe(self, core: EnvCore, st: EpisodeState, rows: np.ndarray) -> None:
        """Set ``st.obs`` / ``st.text`` of stepped rows (after ``advance``)."""

    def time_info(self, core: EnvCore, st: EpisodeState, rows: np.ndarray) -> dict[str, Any]:
        """Extra info columns of resets and steps (the closed loop's ``time``)."""

    def expert_plan(self, core: EnvCore, st: EpisodeState, i: int) -> np.ndarray:
        """(8, 3) the logged expert's plan for row ``i`` in its current ego frame."""

    def current_state(self, core: EnvCore, st: EpisodeState, i: int) -> np.ndarray:
        """(11,) row ``i``'s current simulator state in its scene's t0 frame (the residual action's reference)."""

    def frame(self, core: EnvCore, st: EpisodeState, i: int, renderer: Any) -> np.ndarray:
        """(H, W, 3) uint8 picture of row ``i``."""


class BuiltinReward:
    """The EPDMS scorer's reward: the ``epdms`` column of the rows scored in one batched call."""

    needs_scorer = True

    def rewards(self, core: EnvCore, st: EpisodeState, rows: np.ndarray, plans: np.ndarray, invalid: np.ndarray,
                scored: Scored | None) -> tuple[np.ndarray, np.ndarray | None]:
        """(rewards (M,), None): EPDMS of valid rows, 0 for invalid actions."""
        values = np.zeros(len(rows))
        if scored is not None:
            values[scored.pos] = scored.final["epdms"]
            values[invalid] = 0.0  # the closed loop scores invalid actions too (for termination)
        return values, None


class CallableReward:
    """A custom reward ``fn(scene, plan (8, 3)) -> float`` (e.g. the reward world model), per row.

    The seam for batched rewards: when ``fn`` has ``score_batch(scenes, plans (M, 8, 3)) -> (M,)``, it is called
    once per step with all valid rows instead (a batched model may round differently from M single calls, so this
    is the reward's choice). A batched reward that reads an observation of the scene may also declare
    ``observation_spec = (obs keys, obs config)``: where the episode mode has the rows' observations at t0 (the
    plan-once env), they are handed in as ``score_batch(scenes, plans, observations=[dict per row])``, cached with
    the scene and persisted beside a store like the env's own observation (:meth:`EnvCore.t0_observations`).
    """

    needs_scorer = False

    def __init__(self, fn: Callable[..., float]):
        self.fn = fn
        spec = getattr(fn, "observation_spec", None)
        self.builder = None if spec is None else ObservationBuilder(*spec)

    def rewards(self, core: EnvCore, st: EpisodeState, rows: np.ndarray, plans: np.ndarray, invalid: np.ndarray,
                scored: Scored | None) -> tuple[np.ndarray, np.ndarray]:
        """(rewards (M,), custom (M,)): the callable's values for valid rows, 0 for invalid actions."""
        values = np.zeros(len(rows))
        pos = np.flatnonzero(~invalid)
        if len(pos):
            scenes = core.mode.reward_scenes(core, st, rows[pos])
            batch = getattr(self.fn, "score_batch", None)
            observations = None
            if batch is not None and self.builder is not None:
                observations = core.mode.reward_observations(core, st, rows[pos], self.builder)
            if batch is not None:
                extra = {} if observations is None else {"observations": observations}
                values[pos] = np.asarray(batch(scenes, plans[pos], **extra), np.float64).reshape(len(pos))
            else:
                values[pos] = [float(self.fn(scene, plans[j])) for scene, j in zip(scenes, pos)]
        return values, values


def reward_hook(reward_fn: Callable[..., float] | None) -> BuiltinReward | CallableReward:
    """The reward hook of a resolved reward (None: the built-in EPDMS scorer)."""
    return BuiltinReward() if reward_fn is None else CallableReward(reward_fn)


# ---------------------------------------------------------------------------------------------------------------------
# Spaces
# ---------------------------------------------------------------------------------------------------------------------


def make_env_action_type(config: EnvConfig) -> ActionType:
    """The action type of an env config: ``trajectory`` / ``vocabulary`` (:mod:`irlvla_gym.plans.codec`) or
    ``residual`` (:class:`~irlvla_gym.plans.residual.ResidualAction` with ``config.residual_reference``)."""
    if config.action_type == "residual":
        return ResidualAction(config.residual_reference)
    return make_action_type(config.action_type, config.vocabulary_size)


def flat_space(space: gym.spaces.Dict) -> gym.spaces.Box:
    """The float32 Box of a Dict of Boxes flattened and concatenated in the Dict's order (``flatten_obs``)."""
    lows, highs = [], []
    for sub in space.spaces.values():
        if not isinstance(sub, gym.spaces.Box):
            raise TypeError(f"flatten_obs needs Box entries, got {sub}")
        lows.append(np.asarray(sub.low, np.float32).reshape(-1))
        highs.append(np.asarray(sub.high, np.float32).reshape(-1))
    low, high = np.concatenate(lows), np.concatenate(highs)
    return gym.spaces.Box(low, high, low.shape, np.float32)


# ---------------------------------------------------------------------------------------------------------------------
# The core
# ---------------------------------------------------------------------------------------------------------------------


class EnvCore:
    """What N rows of one env id share, and the batched episode functions over an :class:`EpisodeState`.

    Args:
        config: the env configuration (shared by every row).
        mode: the episode hooks (:class:`~irlvla_gym.envs.modes.PlanOnce` or
            :class:`~irlvla_gym.envs.modes.ClosedLoop`).

    Attributes:
        config, mode, source (:class:`~irlvla_gym.scenes.source.SceneSource`), obs_builder, action_kind,
        reward_fn (None: EPDMS), reward (the hook), bundles (the process-wide per-scene LRU), prepared (the
        persisted per-scene cache, :mod:`irlvla_gym.envs.prepared`, or None), map_pack (how the scorer batches
        the map queries of a step's scenes: ``"shared"`` / ``"step"``, see ``score_bundle_rows``), index_resolution
        (m, the per-scene map index's cells for that mode).
    """

    def __init__(self, config: EnvConfig, mode: EpisodeMode):
        self.config = config
        self.mode = mode
        self.reward_fn = make_reward(config.reward)
        self.source = SceneSource(config.scenes, config.split, config.num_scenes)
        self.obs_builder = ObservationBuilder(config.obs_keys, config.obs_config)
        self.action_kind: ActionType = make_env_action_type(config)
        # The observation space the envs expose: the builder's Dict, or one float32 Box (``flatten_obs``).
        self.observation_space: gym.Space = (flat_space(self.obs_builder.space) if config.flatten_obs else
                                             self.obs_builder.space)
        # A pool larger than the in-memory scene cache keeps meeting scenes the scorer has not packed: each step's
        # scenes are packed alone, with coarser map-index cells (same numbers; envs/scoring.py module docs).
        self.map_pack = map_pack_mode(len(self.source), config.scene_cache_size)
        self.index_resolution = INDEX_RESOLUTION_M[self.map_pack]
        # Per-scene precompute, shared by every env of this process with the same scenes, traffic model and index.
        source_key, keep_alive = self.source.cache_key
        self.bundles: LRU[SceneBundle] = shared_lru((source_key, config.traffic, self.index_resolution),
                                                    config.scene_cache_size, keep_alive)
        # Bundles are shared by envs whose observation keys / configs may differ: the t0 observation is keyed.
        self.obs_key = ("obs0", self.obs_builder.keys, self.obs_builder.config)
        # The persisted per-scene cache beside the scene store (None: scenes not from a store, or disabled).
        self.prepared: PreparedScenes | None = open_prepared(self.source, config.traffic, self.obs_builder,
                                                             self.index_resolution)

    @property
    def reward_fn(self) -> Callable[..., float] | None:
        """The custom reward callable, None for the built-in EPDMS (settable: the hook follows)."""
        return self._reward_fn

    @reward_fn.setter
    def reward_fn(self, fn: Callable[..., float] | None) -> None:
        self._reward_fn = fn
        self.reward = reward_hook(fn)

    # ---- scenes ------------------------------------------------------------------------------------------------

    def get_bundle(self, index: int) -> SceneBundle:
        """The cached per-scene precompute of scene ``index`` (read from the persisted cache, or made on first use
        and written to it)."""
        return self.bundles.get(index, lambda: self.load_bundle(index))

    def load_bundle(self, index: int) -> SceneBundle:
        """Scene ``index``'s precompute, bypassing the in-memory LRU: persisted (the scene itself loaded only when
        asked for: :attr:`SceneBundle.scene`), else made (and persisted)."""
        prepared = self.prepared
        if prepared is not None:
            bundle = prepared.bundle(index, functools.partial(self.source.load, index))
            if bundle is not None:
                return bundle
        bundle = make_bundle(index, self.source.load(index), self.config.traffic, self.index_resolution)
        if prepared is not None:
            prepared.save_bundle(bundle)
        return bundle

    def close(self) -> None:
        """Write the scenes prepared in this process to the persisted cache (also done at exit)."""
        if self.prepared is not None:
            self.prepared.flush()

    def select_index(self, options: Mapping[str, Any] | None, rng: np.random.Generator) -> int:
        """The scene of a reset: ``options["scene_index"]`` / ``options["token"]``, else drawn uniformly by ``rng``."""
        options = options or {}
        if options.get("scene_index") is not None:
            raw = options["scene_index"]
            if isinstance(raw, (bool, np.bool_)) or not isinstance(raw, (int, np.integer)):
                raise TypeError(f"options['scene_index'] must be an int, got {raw!r} ({type(raw).__name__})")
            index = int(raw)
            if not 0 <= index < len(self.source):
                raise IndexError(f"scene_index {index} out of range for {len(self.source)} scenes")
            return index
        if options.get("token") is not None:
            return self.source.index_of(str(options["token"]))
        return int(rng.integers(len(self.source)))

    def t0_observation(self, bundle: SceneBundle) -> tuple[dict[str, np.ndarray], str]:
        """The cached observation at the origin and t0 (read-only arrays, not copies) and the instruction text."""
        self.cache_t0_observations([bundle])
        return bundle.extras[self.obs_key]

    def cache_t0_observations(self, bundles: Sequence[SceneBundle], builder: ObservationBuilder | None = None) -> str:
        """Build the t0 observations of bundles seen for the first time: read from the persisted cache, else one
        batched render for all of them (and queued for the persisted cache). ``builder``: another observation than
        the env's (a reward model's inputs, :meth:`t0_observations`). Returns the bundles' ``extras`` key."""
        own = builder is None or builder is self.obs_builder
        builder = self.obs_builder if own else builder
        key = self.obs_key if own else ("obs0", builder.keys, builder.config)
        if all(key in b.extras for b in bundles):  # the steady state: every scene seen before
            return key
        new = list({id(b): b for b in bundles if key not in b.extras}.values())
        prepared = self.prepared
        table_builder = None if own else builder
        if prepared is not None:
            for b in new:
                persisted = prepared.t0_observation(b.index, table_builder)
                if persisted is not None:
                    b.extras[key] = persisted
            new = [b for b in new if key not in b.extras]
            if not new:
                return key
        if len(new) == 1:
            batch = {k: v[None] for k, v in builder.observe(new[0].scene).items()}
        else:
            batch = builder.observe_batch([b.scene for b in new])
        for j, b in enumerate(new):
            obs = {k: v[j] for k, v in batch.items()}
            for v in obs.values():
                v.setflags(write=False)  # shared by every env and episode of this scene
            b.extras[key] = (obs, builder.instruction_text(b.scene))
            if prepared is not None:
                prepared.save_t0_observation(b.index, *b.extras[key], builder=table_builder)
        return key

    def t0_observations(self, bundles: Sequence[SceneBundle], builder: ObservationBuilder) -> list[dict[str, np.ndarray]]:
        """The t0 observations (read-only arrays) of ``builder`` for each bundle: cached with the scene like the
        env's own observation and persisted beside a store, so a reward model that reads them (``observation_spec``,
        :class:`CallableReward`) renders each scene once per store, not once per episode."""
        key = self.cache_t0_observations(bundles, builder)
        return [b.extras[key][0] for b in bundles]

    # ---- actions -----------------------------------------------------------------------------------------------

    def decode_rows(self, actions: Any, rows: np.ndarray, num_envs: int,
                    st: EpisodeState | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Plans (M, 8, 3), invalid (M,), clipped (M,) of the actions of rows ``rows`` of a batch of ``num_envs``
        actions (vectorised for trajectory actions: element-wise the operations of ``ActionType.decode``). Residual
        actions need the state ``st`` (each row's reference plan)."""
        kind = self.action_kind
        if isinstance(kind, ResidualAction):
            if st is None:
                raise ValueError("decode_rows: residual actions need the episode state (st=...)")
            items = list(actions) if not isinstance(actions, np.ndarray) else actions
            decoded = [self.decode_action(st, int(i), items[i]) for i in rows]
            return (np.stack([d.plan for d in decoded]) if decoded else np.zeros((0, 8, 3)),
                    np.array([d.invalid for d in decoded], bool), np.array([d.clipped for d in decoded], bool))
        if isinstance(kind, TrajectoryAction):
            try:
                a = np.asarray(actions, np.float64).reshape(num_envs, -1)[rows]
                ok = a.shape[1] == 24
            except (TypeError, ValueError):
                ok = False
            if ok:
                finite = np.isfinite(a)
                invalid = ~finite.all(axis=1)
                clipped = np.any(np.abs(a) > 1.0, axis=1) & ~invalid
                return action_to_plan(np.where(finite, a, 0.0)), invalid, clipped
        items = list(actions) if not isinstance(actions, np.ndarray) else actions
        decoded = [kind.decode(items[i]) for i in rows]
        return (np.stack([d.plan for d in decoded]) if decoded else np.zeros((0, 8, 3)),
                np.array([d.invalid for d in decoded], bool), np.array([d.clipped for d in decoded], bool))

    def decode_action(self, st: EpisodeState, i: int, action: Any) -> Decoded:
        """One action of row ``i`` decoded to a plan in its current ego frame (residual actions: around the row's
        reference plan; the other types do not depend on the state)."""
        kind = self.action_kind
        if isinstance(kind, ResidualAction):
            return kind.decode(action, self.residual_frame(st, i))
        return kind.decode(action)

    def encode_plan(self, st: EpisodeState, i: int, plan: np.ndarray):
        """The action of row ``i`` closest to ``plan`` (8, 3) in its current ego frame."""
        kind = self.action_kind
        if isinstance(kind, ResidualAction):
            return kind.encode(plan, self.residual_frame(st, i))
        return kind.encode(plan)

    def residual_frame(self, st: EpisodeState, i: int) -> ResidualFrame:
        """Row ``i``'s :class:`~irlvla_gym.plans.residual.ResidualFrame`: its current speed and the route centreline
        in its current ego frame (cached per scene at t0)."""
        b = st.bundles[i]
        if b is None:
            raise RuntimeError("call reset() before step()")
        kind = self.action_kind
        state = self.mode.current_state(self, st, i)
        at_t0 = int(st.k[i]) == 0
        key = ("residual_frame", kind.reference)
        if at_t0 and key in b.extras:
            return b.extras[key]
        route = np.asarray(b.ctx.route_centerline, np.float64)
        if len(route) and not at_t0:
            route = to_local(route, state[:2], float(state[2]))
        frame = kind.frame(float(np.hypot(state[3], state[4])), route)
        if at_t0:
            b.extras[key] = frame
        return frame

    # ---- episode functions -------------------------------------------------------------------------------------

    def new_state(self, num_rows: int) -> EpisodeState:
        """An empty state of ``num_rows`` rows."""
        return EpisodeState.empty(num_rows)

    def reset(self, st: EpisodeState, rows: np.ndarray, indices: Sequence[int]) -> dict[str, Any]:
        """Start new episodes in scenes ``indices`` on rows ``rows``; returns the reset info columns."""
        bundles = [self.get_bundle(index) for index in indices]
        self.cache_t0_observations(bundles)
        key = self.obs_key
        for i, b in zip(rows, bundles):
            st.bundles[i] = b
            st.obs[i], st.text[i] = b.extras[key]
            st.obs_scene[i] = None
            st.last_scores[i] = None
        st.scene_index[rows] = indices
        st.k[rows] = 0
        st.has_prev[rows] = False
        st.has_plan[rows] = False
        self.mode.start(self, st, rows)
        return {"token": [b.ctx.token for b in bundles], "scene_index": st.scene_index[rows],
                "instruction": [st.text[i] for i in rows], **self.mode.time_info(self, st, rows)}

    def step(self, st: EpisodeState, rows: np.ndarray, plans: np.ndarray, invalid: np.ndarray, clipped: np.ndarray,
             states: np.ndarray | None = None) -> StepOutput:
        """Step rows ``rows`` with plans (M, 8, 3) in their current ego frames (the step template).

        Args:
            st: the state (updated in place).
            rows: (M,) int rows to step.
            plans: (M, 8, 3) decoded plans (m, rad); invalid / clipped: (M,) bool decoder flags.
            states: (M, 41, 11) already simulated states of the valid rows (plan-once only), None to simulate here.
        """
        if any(st.bundles[i] is None for i in rows):
            raise RuntimeError("call reset() before step()")
        mode = self.mode
        decision = mode.decide(self, st, rows, plans, invalid, states)
        scored = mode.score(self, st, rows, decision, invalid)
        rewards, custom = self.reward.rewards(self, st, rows, plans, invalid, scored)
        scores = (ScoreInfo(invalid, None, None, custom, mode.custom_with_scores) if scored is None else
                  ScoreInfo(invalid, scored.final, scored.pos, custom, mode.custom_with_scores))
        mode.advance(self, st, rows, decision)
        terminated, end_info = mode.terminated(self, st, rows, scored)
        truncated, cut_info = mode.truncated(self, st, rows, terminated)
        mode.observe(self, st, rows)
        st.last_plan[rows] = decision.world
        st.has_plan[rows] = True
        for j, i in enumerate(rows):
            st.last_scores[i] = (scores, j)
        info = {"token": [st.bundles[i].ctx.token for i in rows], "scene_index": st.scene_index[rows],
                "instruction": [st.text[i] for i in rows], "rewards": scores, "invalid_action": invalid,
                "clipped_action": clipped, "plan": plans, **mode.time_info(self, st, rows), **end_info, **cut_info}
        return StepOutput(rewards, terminated, truncated, info)

    def rewards_of(self, st: EpisodeState, rows: np.ndarray, plans: np.ndarray, invalid: np.ndarray) -> np.ndarray:
        """(M,) the rewards plans (M, 8, 3) *would* earn on rows ``rows`` now, without stepping them (nothing in
        ``st`` changes). Only for modes whose score does not depend on what the rows did before
        (``mode.scores_in_place``, the plan-once env): e.g. the reward of the policy's mean plan as a per-scene
        baseline (self-critical PPO, ``baselines``)."""
        if not getattr(self.mode, "scores_in_place", False):
            raise NotImplementedError(f"rewards_of: {type(self.mode).__name__} episodes cannot score a plan without "
                                      "stepping (only the plan-once env can)")
        if any(st.bundles[i] is None for i in rows):
            raise RuntimeError("call reset() before rewards_of()")
        decision = self.mode.decide(self, st, rows, plans, invalid, None)
        scored = self.mode.score(self, st, rows, decision, invalid)
        rewards, _ = self.reward.rewards(self, st, rows, plans, invalid, scored)
        return rewards

    def last_scores(self, st: EpisodeState, i: int) -> dict[str, float] | None:
        """Row ``i``'s last ``info["rewards"]`` (None before its first step)."""
        entry = st.last_scores[i]
        return None if entry is None else entry[0].row(entry[1])

    def observations(self, st: EpisodeState) -> dict[str, np.ndarray] | np.ndarray:
        """(N, ...) observations of every row, gathered into arrays the caller owns (never written again while it
        holds them: :class:`ObservationBuffers`); ``flatten_obs``: one new (N, D) float32 array."""
        if any(o is None for o in st.obs):
            raise RuntimeError("call reset() first")
        if self.config.flatten_obs:
            return np.stack([self.flatten(o) for o in st.obs])
        return st.obs_out.gather(st.obs, list(self.obs_builder.space.spaces))

    def row_observation(self, st: EpisodeState, i: int) -> dict[str, np.ndarray] | np.ndarray:
        """Row ``i``'s current observation as the env returns it: the state's dict itself (its t0 arrays are the
        scene's shared read-only ones), or a new flat float32 vector (``flatten_obs``)."""
        return self.flatten(st.obs[i]) if self.config.flatten_obs else st.obs[i]

    def flatten(self, obs: Mapping[str, np.ndarray]) -> np.ndarray:
        """(D,) float32: the entries of one observation dict flattened and concatenated in the space's order."""
        return flatten_observations(obs, list(self.obs_builder.space.spaces), batch=None)


def flatten_observations(obs: Mapping[str, np.ndarray], keys: Sequence[str], batch: int | None) -> np.ndarray:
    """The ``flatten_obs`` vector: the entries ``keys`` of an observation dict as float32, each flattened, concatenated
    in that order; (D,) for one observation (``batch`` None) or (batch, D) for a batch of them."""
    rows = [np.asarray(obs[k], np.float32).reshape(batch or 1, -1) for k in keys]
    flat = np.concatenate(rows, axis=1)
    return flat if batch is not None else flat[0]


__all__ = [
    "BuiltinReward", "CallableReward", "Decision", "EnvCore", "EpisodeMode", "EpisodeState", "HISTORY_ROWS",
    "ObservationBuffers", "ScoreInfo", "Scored", "StepOutput", "TRACE_ROWS", "flat_space", "flatten_observations",
    "make_env_action_type",
    "reward_hook", "row_info", "trace_length",
]
