"""Pictures of where a recipe loses: ``irlvla baselines compare --figures K``.

For every evaluation set and every trained row of the table (not the references), the ``K`` scenes with the largest
paired loss against the baseline (the row's seed-mean EPDMS minus the baseline's, as in the table) are drawn as
bird's-eye PNGs: the map, the agents at t0 (and their logged motion), the logged human plan, the baseline's plan
and the plan of the row's worst seed on that scene, with both scores in the title. A table says *how much* a recipe
loses; these say *what it does* there (e.g. a plan that drifts into the neighbouring lane, or turns too wide).

Files: ``<out>/figures/<set>/<row>-<rank>-<token>.png`` (rank 1 = the largest loss). Scenes are the set's own (the
real windows in memory, a synthetic split's first N scenes from its generator), plans are re-planned by the
entrants' agents on each scene's t0 observation (what the leaderboard scored).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

VIEW_RANGE = (-10.0, 50.0, -30.0, 30.0)
"""(x_min, x_max, y_min, y_max) of the pictures in the ego frame (m): 4 s plans up to ~45 m ahead."""


def worst_scenes(results: Mapping[str, dict], keys: Sequence[str], baseline_keys: Sequence[str],
                 k: int) -> list[tuple[int, str, float, float]]:
    """The ``k`` scenes with the largest loss of a row against the baseline: (scene index, key of the row's worst
    seed there, that seed's EPDMS, the baseline's seed-mean EPDMS), largest loss first; scenes where the row is not
    worse than the baseline are left out. ``keys`` / ``baseline_keys``: result keys of the row's / baseline's seeds.
    """
    def epdms(key: str) -> np.ndarray:
        return np.nan_to_num(np.asarray(results[key]["scores"]["epdms"], np.float64))

    row = np.stack([epdms(key) for key in keys])  # (S, N)
    base = np.mean([epdms(key) for key in baseline_keys], axis=0)
    loss = base - row.mean(axis=0)
    order = [int(i) for i in np.argsort(-loss, kind="stable")[:k] if loss[i] > 1e-3]
    return [(i, keys[int(np.argmin(row[:, i]))], float(row[:, i].min()), float(base[i])) for i in order]


def _scene_getter(eval_set: Any):
    if eval_set.scenes is not None:
        return lambda i: eval_set.scenes[i]
    from irlvla_gym.scenes.source import SceneSource

    source = SceneSource(eval_set.split, num_scenes=eval_set.num_scenes)
    return source.load


def _plan(agent: Any, scene: Any) -> np.ndarray:
    from irlvla_gym.obs.config import ObsConfig
    from irlvla_gym.obs.registry import ObservationBuilder

    keys = tuple(getattr(agent, "obs_keys", ()))
    obs = ObservationBuilder(keys, ObsConfig.from_dict(getattr(agent, "obs_config", None))).observe(scene) if keys else {}
    return np.asarray(agent.plan(obs, scene), np.float64)


def render_worst(eval_set: Any, entrants: Sequence[Any], results: Mapping[str, dict], baseline: str, k: int,
                 out: str | Path) -> list[Path]:
    """Draw the ``k`` worst scenes of every trained row of one set (module docs); returns the PNG paths.

    Args:
        eval_set: the :class:`~baselines.protocol.EvalSet` (its scenes or split). entrants: the table's entrants
            (``row``, ``key``, ``run_dir``, ``load()``). results: entrant key -> stored result (per-scene
            ``scores``, ``tokens``). baseline: the baseline row. k: scenes per row. out: the compare directory.
    """
    import matplotlib.pyplot as plt

    from irlvla_gym.scenes.render import render_scene

    base_ents = [e for e in entrants if e.row == baseline]
    rows = list(dict.fromkeys(e.row for e in entrants if e.run_dir is not None and e.row != baseline))
    if k < 1 or not base_ents or not rows:
        return []
    scene_of = _scene_getter(eval_set)
    baseline_agent = base_ents[0].load()
    folder = Path(out) / "figures" / eval_set.name
    folder.mkdir(parents=True, exist_ok=True)
    agents: dict[str, Any] = {}
    paths = []
    tokens = results[base_ents[0].key]["tokens"]
    for row in rows:
        keys = [e.key for e in entrants if e.row == row]
        for rank, (index, key, score, base_score) in enumerate(
                worst_scenes(results, keys, [e.key for e in base_ents], k), start=1):
            scene = scene_of(index)
            if key not in agents:
                agents[key] = next(e for e in entrants if e.key == key).load()
            plans = np.stack([_plan(baseline_agent, scene), _plan(agents[key], scene)])
            path = folder / f"{row}-{rank}-{tokens[index]}.png"
            title = (f"{tokens[index]} ({scene.command_name})\n{key}: EPDMS {score:.2f}   "
                     f"{baseline}: {base_score:.2f}")
            figure = render_scene(scene, path, plans=plans, plan_labels=[baseline, key], title=title,
                                  view_range=VIEW_RANGE, figsize=(9.6, 6.4), dpi=80)
            plt.close(figure)
            paths.append(path)
    return paths


__all__: Sequence[str] = ["VIEW_RANGE", "render_worst", "worst_scenes"]
