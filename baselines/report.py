"""The baselines table (markdown + CSV + JSON) and the learning-curve PNG.

Rows: every variant (mean and std over seeds of EPDMS, PDMS and each sub-score on the evaluation split, plus wall
time per env step, env time per step and extrapolated wall seconds per 100k steps), then the no-RL rows (BC alone,
bc-diffusion) and the rule-based references (one evaluation each, std empty). Below the table: the two findings the
issue asks for (ppo-vla-rwm vs BC alone; learned vs rule-based reward cost per step).
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from baselines.common import read_json, run_dir_of, save_figure, write_json
from irlvla_gym.metrics.config import SUB_SCORES
from irlvla_gym.rewards import parse_reward

SCORES = ("epdms", "pdms", *SUB_SCORES)
TIMES = ("ms_per_step", "env_ms_per_step", "update_ms_per_step", "wall_s_per_100k_steps")


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    arr = np.asarray([v for v in values if v is not None and np.isfinite(v)], np.float64)
    if not len(arr):
        return float("nan"), float("nan")
    return float(arr.mean()), float(arr.std(ddof=1)) if len(arr) > 1 else 0.0


def collect_rows(out: Path, variants: Sequence[str], seeds: Sequence[int],
                 references: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Table rows: per variant mean/std over the seeds that finished; then the references."""

    rows: list[dict[str, Any]] = []
    for variant in variants:
        done = [read_json(run_dir_of(out, variant, s) / "done.json") for s in seeds
                if (run_dir_of(out, variant, s) / "done.json").is_file()]
        done = [d for d in done if "eval" in d]
        row: dict[str, Any] = {"agent": variant, "kind": "rl", "seeds": len(done),
                               "steps": int(done[0]["steps"]) if done else 0,
                               "vec_env": done[0].get("vec_env", "") if done else ""}
        for name in SCORES:
            row[name], row[f"{name}_std"] = _mean_std([d["eval"][name] for d in done])
        for name in TIMES:
            row[name], _ = _mean_std([d[name] for d in done])
        row["per_seed_epdms"] = [float(d["eval"]["epdms"]) for d in done]
        rows.append(row)
    for name, ref in references.items():
        row = {"agent": name, "kind": "no-rl" if name.startswith("bc") else "reference", "seeds": 1, "steps": 0,
               "vec_env": ""}
        for score in SCORES:
            row[score], row[f"{score}_std"] = float(ref[score]), float("nan")
        for t in TIMES:
            row[t] = float("nan")
        row["per_seed_epdms"] = [float(ref["epdms"])]
        rows.append(row)
    return rows


def _fmt(mean: float, std: float | None = None, digits: int = 3) -> str:
    if mean is None or not math.isfinite(mean):
        return "-"
    if std is None or not math.isfinite(std):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def findings(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """The two sentences the issue asks for, computed from the rows (empty when a row is missing)."""
    by = {r["agent"]: r for r in rows}
    lines = []
    if "ppo-vla-rwm" in by and "bc" in by and by["ppo-vla-rwm"]["seeds"]:
        r, b = by["ppo-vla-rwm"], by["bc"]
        delta = r["epdms"] - b["epdms"]
        per_seed = ", ".join(f"{v - b['epdms']:+.4f}" for v in r["per_seed_epdms"])
        lines.append(f"ppo-vla-rwm vs BC alone: EPDMS {r['epdms']:.4f} ± {r['epdms_std']:.4f} vs {b['epdms']:.4f} "
                     f"(delta {delta:+.4f}; per seed {per_seed}).")
    if "ppo-vla-rwm" in by and "ppo-vla-epdms" in by and by["ppo-vla-rwm"]["seeds"] and by["ppo-vla-epdms"]["seeds"]:
        r, e = by["ppo-vla-rwm"], by["ppo-vla-epdms"]
        lines.append(f"learned vs rule-based reward, wall time per env step (same preset): env step "
                     f"{r['env_ms_per_step']:.2f} ms (rwm) vs {e['env_ms_per_step']:.2f} ms (epdms) "
                     f"(x{r['env_ms_per_step'] / max(e['env_ms_per_step'], 1e-9):.2f}); whole training step "
                     f"{r['ms_per_step']:.1f} ms vs {e['ms_per_step']:.1f} ms "
                     f"(x{r['ms_per_step'] / max(e['ms_per_step'], 1e-9):.2f}); per 100k steps "
                     f"{r['wall_s_per_100k_steps'] / 3600:.2f} h vs {e['wall_s_per_100k_steps'] / 3600:.2f} h.")
    return lines


def markdown(rows: Sequence[Mapping[str, Any]], header: str = "") -> str:
    cols = ("agent", "seeds", "steps", "EPDMS", "PDMS", "NC", "DAC", "DDC", "TLC", "EP", "TTC", "LK", "HC",
            "ms/step", "env ms/step", "h/100k steps")
    lines = [header] if header else []
    lines += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        cells = [r["agent"], str(r["seeds"]), str(r["steps"]), _fmt(r["epdms"], r["epdms_std"]),
                 _fmt(r["pdms"], r["pdms_std"])]
        cells += [_fmt(r[n], r[f"{n}_std"]) for n in ("nc", "dac", "ddc", "tlc", "ep", "ttc", "lk", "hc")]
        cells += [_fmt(r["ms_per_step"], None, 1), _fmt(r["env_ms_per_step"], None, 2),
                  _fmt(r["wall_s_per_100k_steps"] / 3600 if math.isfinite(r["wall_s_per_100k_steps"]) else
                       float("nan"), None, 2)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


CURVE_PANELS = ("reward_mean", "epdms", *(f"subscore_{n}" for n in ("nc", "dac", "ddc", "tlc", "ep", "ttc", "lk",
                                                                      "hc")))
"""curve.csv columns drawn, one panel each: the reward paid, the scorer's EPDMS, its sub-scores (EC left out)."""
PANEL_TITLES = {"reward_mean": "training reward paid (EPDMS or learned)", "epdms": "true EPDMS (rule-based scorer)"}


def read_curves(out: Path, variants: Sequence[str], seeds: Sequence[int]) -> dict[str, list[dict[str, np.ndarray]]]:
    """variant -> per seed, curve.csv column -> (rows,) values (NaN where a column was not measured)."""
    from baselines.hooks import CurveWriter

    curves: dict[str, list[dict[str, np.ndarray]]] = {}
    for variant in variants:
        for s in seeds:
            p = run_dir_of(out, variant, s) / "curve.csv"
            rows = CurveWriter(p).rows() if p.is_file() else []
            if rows:
                curves.setdefault(variant, []).append({k: np.array([r.get(k, np.nan) for r in rows])
                                                       for k in ("step", *CURVE_PANELS)})
    return curves


def _reward_label(out: Path, variant: str, seeds: Sequence[int]) -> str:
    path = run_dir_of(out, variant, seeds[0]) / "config.json"
    reward = read_json(path).get("reward", "epdms") if path.is_file() else "epdms"
    return f"{variant} (learned reward)" if parse_reward(reward).learned else variant


def _draw_panel(ax: Any, column: str, curves: Mapping[str, list[dict[str, np.ndarray]]],
                labels: Mapping[str, str]) -> bool:
    """Mean ± std over seeds of ``column`` per variant on [0, 1] (widened if a value leaves it); False if empty."""
    drawn, low, high = False, 0.0, 1.0
    for i, (variant, seeds) in enumerate(curves.items()):
        n = min(len(c["step"]) for c in seeds)
        values = np.stack([c[column][:n] for c in seeds])
        if n == 0 or np.isnan(values).all():
            continue
        mean, std = np.nanmean(values, 0), np.nanstd(values, 0)
        ax.plot(seeds[0]["step"][:n], mean, color=f"C{i}", label=f"{labels[variant]} (n={len(seeds)})")
        ax.fill_between(seeds[0]["step"][:n], mean - std, mean + std, color=f"C{i}", alpha=0.2)
        low, high, drawn = min(low, float(np.nanmin(mean - std))), max(high, float(np.nanmax(mean + std))), True
    ax.set_ylim(low - 0.02, high + 0.02)  # honest axes: the scores' whole range, not zoomed on the curve
    ax.set_title(PANEL_TITLES.get(column, column.replace("subscore_", "").upper()), fontsize=9)
    ax.set_xlabel("env steps", fontsize=8)
    ax.grid(alpha=0.3)
    return drawn


def plot_curves(out: Path, variants: Sequence[str], seeds: Sequence[int], path: Path) -> Path | None:
    """learning_curves.png: per env step, mean ± std over seeds, one panel each for the training reward paid, the
    rule-based scorer's EPDMS and its sub-scores (curve.csv columns; runs without them show only the reward), all on
    the scores' [0, 1] range. None when no run has a curve."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = read_curves(out, variants, seeds)
    if not curves:
        return None
    labels = {v: _reward_label(out, v, seeds) for v in curves}
    present = [c for c in CURVE_PANELS
               if any(not np.isnan(s[c]).all() for runs in curves.values() for s in runs)]
    ncols = min(len(present), 5)
    nrows = -(-len(present) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.6 * ncols, 3.2 * nrows), squeeze=False)
    for ax, column in zip(axes.flat, present):
        _draw_panel(ax, column, curves, labels)
    for ax in list(axes.flat)[len(present):]:
        ax.axis("off")
    axes.flat[0].set_ylabel("mean per rollout")
    axes.flat[0].legend(fontsize=7)
    return save_figure(fig, path, "Baselines: training reward, true EPDMS and sub-scores per env step "
                                  "(mean ± std over seeds)", dpi=110)


def write_report(out: str | Path, variants: Sequence[str], seeds: Sequence[int],
                 references: Mapping[str, Mapping[str, Any]], command: Mapping[str, Any] | None = None
                 ) -> dict[str, Path]:
    """Write ``baselines.md``, ``baselines.csv``, ``baselines.json`` and ``learning_curves.png`` into ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = collect_rows(out, variants, seeds, references)
    notes = findings(rows)
    paths: dict[str, Path] = {}
    split = next((read_json(p).get("eval", {}) for p in out.glob("*/seed*/config.json")), {})
    header = (f"EPDMS and sub-scores on {split.get('split', 'synthetic-test')} (first {split.get('num_scenes')} "
              f"scenes, rule-based scorer, leaderboard protocol); mean ± std over seeds {list(seeds)}.\n")
    text = markdown(rows, header) + ("\n" + "\n".join(f"* {line}" for line in notes) + "\n" if notes else "")
    paths["md"] = out / "baselines.md"
    paths["md"].write_text(text)
    paths["csv"] = out / "baselines.csv"
    fields = ["agent", "kind", "seeds", "steps", "vec_env"] + [c for n in SCORES for c in (n, f"{n}_std")] + \
        list(TIMES)
    with open(paths["csv"], "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    paths["json"] = write_json(out / "baselines.json", {"rows": rows, "findings": notes, "command": command or {}})
    png = plot_curves(out, variants, seeds, out / "learning_curves.png")
    if png is not None:
        paths["png"] = png
    print(text)
    return paths


__all__ = ["CURVE_PANELS", "SCORES", "TIMES", "collect_rows", "findings", "markdown", "plot_curves", "read_curves",
           "write_report"]
