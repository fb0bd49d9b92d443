"""Paired comparisons against a named baseline agent with hierarchical bootstrap confidence intervals: the project's
statistics for learning claims (``irlvla baselines compare`` runs the whole protocol; ``baselines/README.md``,
"Evaluation protocol"). numpy only.

**Input.** Per-scene scores of every agent on one common scene list: ``scores[agent][seed]`` is an array (N,) of
fractions in [0, 1] (e.g. per-scene EPDMS), scene ``j`` being the same scene for every agent and seed. A
deterministic agent (a rule-based planner, one fixed checkpoint) has one seed; a trained recipe has one entry per
training seed. ``scores[agent]`` may also be a single (N,) array (one seed) or an (S, N) array (S seeds).
**NaN means the agent failed on that scene and counts as 0**, exactly as the leaderboard scores a failed plan
(``irlvla_gym.leaderboard``: an agent that raises or returns a malformed plan gets 0 for that scene); the number of
such entries is reported as ``failed``. Infinite values are refused.

**Statistics** of agent A against the baseline B (reported x ``scale``, i.e. in percent by default):

* ``mean``: the mean over A's seeds of its mean over the N scenes.
* ``delta``: ``mean(A) - mean(B)`` = the mean over scenes of the paired per-scene difference (A's seed mean minus
  B's seed mean on the same scene).
* 95 % CIs (``mean_ci``, ``delta_ci``) by a **hierarchical percentile bootstrap**: each of R resamples draws A's
  seeds with replacement (S_A of them), B's seeds with replacement (S_B, independently: seed k of one recipe has
  nothing to do with seed k of another), and N scenes with replacement; the **same scene draw** is applied to A, B
  (and every other agent of the table), which is what makes the difference paired. The statistic of a resample is
  the mean over its drawn seeds x drawn scenes; the CI is the (alpha/2, 1 - alpha/2) quantile pair of the R
  values. With one seed (a deterministic baseline, ``S_B = 1``) the seed level is a no-op and the baseline is
  broadcast against every seed of A. With few seeds the seed level is under-dispersed (a bootstrap of S values has
  (S - 1) / S of their variance), so intervals of 2-3 seed recipes are on the short side: report the seed count.
* **Clustered scenes** (``clusters``: a label per scene, e.g. the log a real window was cut from): scenes of one
  cluster are not independent (windows 0.5 s apart in one drive share the traffic, the map and the policy's
  mistakes), so the scene level draws *clusters* with replacement (C of them, the same draw for every agent) and
  takes every scene of a drawn cluster; a resample's statistic is the mean over the scenes so drawn (clusters of
  different sizes weigh by their scene count, as in the point estimate). With few clusters this interval is wide
  and itself rough (a percentile bootstrap over C values); with one scene per cluster it is the scene bootstrap.
* ``improved`` / ``worsened``: fractions of scenes whose paired per-scene difference is > ``tol`` / < ``-tol``.

Scene draws come from ``numpy.random.default_rng([seed, 0])`` and each agent's seed draws from a generator keyed
by ``(seed, crc32(agent name))``, so results are reproducible and an agent's interval does not depend on which other
agents share the table. Vectorised: 2,000 resamples of 500 scenes x 3 seeds take a few milliseconds.
"""

from __future__ import annotations

import zlib
from dataclasses import asdict, dataclass
from typing import Any, Mapping, Sequence

import numpy as np

BLOCK_ELEMENTS = 4_000_000
"""Resamples are processed in blocks of at most this many (resample x scene) weights (32 MB of float64)."""


@dataclass(frozen=True)
class PairedRow:
    """One agent against the baseline (scores x ``scale``; fractions of scenes in [0, 1]).

    Attributes:
        agent: name. seeds: S (seeds of the agent). scenes: N. failed: NaN entries (counted as 0) over seeds x scenes.
        mean: mean score. mean_ci: (low, high) bootstrap CI of the mean.
        delta: mean paired per-scene difference to the baseline. delta_ci: (low, high) bootstrap CI of it.
        improved, worsened: fractions of scenes better / worse than the baseline (seed means compared).
        seed_means: the agent's mean score per seed, in seed order.
    """

    agent: str
    seeds: int
    scenes: int
    failed: int
    mean: float
    mean_ci: tuple[float, float]
    delta: float
    delta_ci: tuple[float, float]
    improved: float
    worsened: float
    seed_means: tuple[float, ...]

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["mean_ci"], out["delta_ci"] = list(self.mean_ci), list(self.delta_ci)
        out["seed_means"] = list(self.seed_means)
        return out


@dataclass(frozen=True)
class PairedComparison:
    """Every agent against ``baseline`` (rows in the order of the input mapping, the baseline's own row included:
    delta 0, CI [0, 0]) and the bootstrap settings (``clusters``: the number of scene clusters drawn, None when
    scenes were drawn independently)."""

    baseline: str
    rows: tuple[PairedRow, ...]
    scenes: int
    resamples: int
    confidence: float
    seed: int
    scale: float
    clusters: int | None = None

    def row(self, agent: str) -> PairedRow:
        for r in self.rows:
            if r.agent == agent:
                return r
        raise KeyError(f"no row for agent {agent!r}; rows: {[r.agent for r in self.rows]}")

    def to_dict(self) -> dict[str, Any]:
        return {"baseline": self.baseline, "scenes": self.scenes, "resamples": self.resamples,
                "confidence": self.confidence, "seed": self.seed, "scale": self.scale, "clusters": self.clusters,
                "rows": [r.to_dict() for r in self.rows]}


def score_matrix(values: Any, where: str, scenes: int | None = None) -> np.ndarray:
    """``values`` (a mapping seed -> (N,), an (N,) array or an (S, N) array) as an (S, N) float64 matrix with NaN
    kept; ``where`` names the argument in errors; ``scenes``: the required N (None: any N >= 1)."""
    if isinstance(values, Mapping):
        if not values:
            raise ValueError(f"{where} has no seeds (an empty mapping)")
        rows = []
        for seed, arr in values.items():
            a = np.asarray(arr, dtype=np.float64)
            if a.ndim != 1:
                raise ValueError(f"{where}[{seed!r}] must be a 1-D array over scenes, got shape {a.shape}")
            if rows and a.shape != rows[0].shape:
                raise ValueError(f"{where}[{seed!r}] has shape {a.shape} but the agent's other seeds have "
                                 f"{rows[0].shape}")
            rows.append(a)
        mat = np.stack(rows)
    else:
        mat = np.asarray(values, dtype=np.float64)
        if mat.ndim == 1:
            mat = mat[None]
        if mat.ndim != 2:
            raise ValueError(f"{where} must be a mapping seed -> (N,) array, an (N,) or an (S, N) array, got shape "
                             f"{mat.shape}")
    if mat.shape[1] == 0:
        raise ValueError(f"{where} has no scenes")
    if scenes is not None and mat.shape[1] != scenes:
        raise ValueError(f"{where} has {mat.shape[1]} scenes per seed but the baseline has {scenes}: every agent "
                         f"must be scored on the same scene list")
    if np.isinf(mat).any():
        raise ValueError(f"{where} has infinite values (NaN = failed scene is allowed, inf is not)")
    return mat


def _draw_counts(rng: np.random.Generator, b: int, k: int) -> np.ndarray:
    """(b, k) float64 counts of each of k items in b draws of k items with replacement."""
    draws = rng.integers(0, k, size=(b, k))
    return np.bincount((draws + (np.arange(b) * k)[:, None]).ravel(), minlength=b * k).reshape(b, k).astype(
        np.float64)


def _seed_counts(name: str, num_seeds: int, resamples: int, seed: int) -> np.ndarray:
    """(R, S) float64 counts of each seed in each resample's draw of S seeds with replacement."""
    if num_seeds == 1:
        return np.ones((resamples, 1))
    return _draw_counts(np.random.default_rng([seed, 1, zlib.crc32(name.encode())]), resamples, num_seeds)


def cluster_index(clusters: Sequence[Any], n: int) -> np.ndarray:
    """(N,) int64 cluster number (0 .. C-1, in order of first appearance) of each scene's label; ValueError unless
    there is one label per scene."""
    labels = list(clusters)
    if len(labels) != n:
        raise ValueError(f"clusters has {len(labels)} labels but the scores have {n} scenes: give one label per scene")
    first: dict[Any, int] = {}
    return np.array([first.setdefault(label, len(first)) for label in labels], np.int64)


def bootstrap_means(matrices: Mapping[str, np.ndarray], resamples: int = 2000, seed: int = 0,
                    clusters: Sequence[Any] | None = None) -> dict[str, np.ndarray]:
    """Hierarchical bootstrap means (module docstring) of every agent under shared scene draws.

    Args:
        matrices: agent -> (S_a, N) scores with failures already 0; every N equal.
        resamples: R. seed: the bootstrap seed.
        clusters: None (scenes drawn independently) or one label per scene (clusters drawn, module docstring).

    Returns:
        agent -> (R,) resampled means (same units as the input); resample r used the same scenes for every agent.
    """
    n = next(iter(matrices.values())).shape[1]
    owner = None if clusters is None else cluster_index(clusters, n)
    counts = {name: _seed_counts(name, m.shape[0], resamples, seed) for name, m in matrices.items()}
    out = {name: np.empty(resamples) for name in matrices}
    scene_rng = np.random.default_rng([seed, 0])
    block = max(1, min(resamples, BLOCK_ELEMENTS // n))
    for start in range(0, resamples, block):
        b = min(block, resamples - start)
        if owner is None:
            weights = _draw_counts(scene_rng, b, n) / n
        else:  # every scene of a drawn cluster, as often as its cluster was drawn
            per_scene = _draw_counts(scene_rng, b, int(owner.max()) + 1)[:, owner]
            weights = per_scene / per_scene.sum(axis=1, keepdims=True)
        for name, mat in matrices.items():
            per_seed = weights @ mat.T  # (b, S): each seed's mean over the drawn scenes
            c = counts[name][start:start + b]
            out[name][start:start + b] = (c * per_seed).sum(axis=1) / mat.shape[0]
    return out


ROUNDING = 1e-12
"""Differences smaller than this (score units) are rounding (e.g. the mean of S equal seeds), reported as 0."""
BETTER_TOL = 1e-3
"""A scene counts as better / worse than the baseline only beyond this difference (score units; 0.1 EPDMS points):
retraining the same recipe moves per-scene scores by ~1e-4, which is not a scene going better or worse."""


def _snap(values: np.ndarray) -> np.ndarray:
    return np.where(np.abs(values) < ROUNDING, 0.0, values)


def paired_comparison(scores: Mapping[str, Any], baseline: str, *, resamples: int = 2000, confidence: float = 0.95,
                      seed: int = 0, tol: float = BETTER_TOL, scale: float = 100.0,
                      clusters: Sequence[Any] | None = None) -> PairedComparison:
    """Every agent of ``scores`` against ``baseline`` (module docstring: inputs, NaN = failed = 0, statistics).

    Args:
        scores: agent -> seed -> (N,) per-scene scores in [0, 1] (or an (N,) / (S, N) array per agent), the same N
            scenes in the same order for every agent and seed.
        baseline: the agent (a key of ``scores``) every other is compared with.
        resamples: bootstrap resamples R (>= 1). confidence: CI level in (0, 1). seed: bootstrap seed.
        tol: a per-scene difference beyond +-tol counts as improved / worsened (score units, before ``scale``).
        scale: factor applied to every reported score (100: percent).
        clusters: None, or one label per scene (e.g. the log of a real window): the bootstrap then draws clusters,
            not scenes (module docstring); point estimates and better / worse shares do not change.

    Raises:
        ValueError: one message naming the argument: unknown ``baseline``, an agent with no seeds, arrays that are not
            1-D, seeds or agents with different scene counts, infinite values, bad ``resamples`` / ``confidence``,
            ``clusters`` without one label per scene.
    """
    if not isinstance(scores, Mapping) or not scores:
        raise ValueError("scores must be a non-empty mapping agent -> seed -> per-scene scores")
    if baseline not in scores:
        raise ValueError(f"baseline {baseline!r} is not one of the agents in scores: {list(scores)}")
    if int(resamples) < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    if not 0.0 < float(confidence) < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    base = score_matrix(scores[baseline], f"scores[{baseline!r}]")
    raw = {name: score_matrix(values, f"scores[{name!r}]", base.shape[1]) for name, values in scores.items()}
    matrices = {name: np.nan_to_num(m, nan=0.0) for name, m in raw.items()}
    clusters = None if clusters is None else list(clusters)
    boot = bootstrap_means(matrices, int(resamples), int(seed), clusters)
    alpha = (1.0 - float(confidence)) / 2.0
    base_scene = matrices[baseline].mean(axis=0)
    rows = []
    for name, mat in matrices.items():
        diff = _snap(mat.mean(axis=0) - base_scene)  # (N,) paired per-scene differences
        deltas = _snap(boot[name] - boot[baseline])
        mean_ci = np.quantile(boot[name], [alpha, 1.0 - alpha]) * scale
        delta_ci = np.quantile(deltas, [alpha, 1.0 - alpha]) * scale
        rows.append(PairedRow(
            agent=str(name), seeds=int(mat.shape[0]), scenes=int(mat.shape[1]), failed=int(np.isnan(raw[name]).sum()),
            mean=float(mat.mean() * scale), mean_ci=(float(mean_ci[0]), float(mean_ci[1])),
            delta=float(diff.mean() * scale), delta_ci=(float(delta_ci[0]), float(delta_ci[1])),
            improved=float(np.mean(diff > tol)), worsened=float(np.mean(diff < -tol)),
            seed_means=tuple(float(v) for v in mat.mean(axis=1) * scale)))
    num_clusters = None if clusters is None else len(set(clusters))
    return PairedComparison(baseline=baseline, rows=tuple(rows), scenes=int(base.shape[1]), resamples=int(resamples),
                            confidence=float(confidence), seed=int(seed), scale=float(scale), clusters=num_clusters)


def _interval(value: float, ci: Sequence[float], signed: bool, digits: int) -> str:
    fmt = f"{{:{'+' if signed else ''}.{digits}f}}"
    return f"{fmt.format(value)} [{fmt.format(ci[0])}, {fmt.format(ci[1])}]"


def markdown_table(comparison: PairedComparison, *, score: str = "EPDMS",
                   extra: Mapping[str, Mapping[str, Any]] | None = None, digits: int = 1) -> str:
    """The comparison as a markdown table, one row per agent.

    Columns: agent, seeds, scenes, ``score`` with its CI, the paired delta vs the baseline with its CI, the
    percentages of scenes improved / worsened, then one column per ``extra`` entry (column name -> agent -> value;
    floats are printed with ``digits`` decimals, missing agents as ``-``). Failed (NaN) entries are noted after
    the agent's name.
    """
    level = f"{100 * comparison.confidence:g}% CI"
    extra = dict(extra or {})
    head = ["agent", "seeds", "scenes", f"{score} [{level}]", f"Δ vs {comparison.baseline} [{level}]",
            "better / worse"] + list(extra)
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for r in comparison.rows:
        name = r.agent + (f" ({r.failed} failed)" if r.failed else "")
        delta = "(baseline)" if r.agent == comparison.baseline else _interval(r.delta, r.delta_ci, True, digits)
        cells = [name, str(r.seeds), str(r.scenes), _interval(r.mean, r.mean_ci, False, digits), delta,
                 f"{100 * r.improved:.0f}% / {100 * r.worsened:.0f}%"]
        for column in extra.values():
            value = column.get(r.agent)
            cells.append("-" if value is None else (f"{value:.{digits}f}" if isinstance(value, float) else str(value)))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


__all__ = ["BETTER_TOL", "BLOCK_ELEMENTS", "ROUNDING", "PairedComparison", "PairedRow", "bootstrap_means",
           "cluster_index", "markdown_table", "paired_comparison", "score_matrix"]
