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


def plot_curves(out: Path, variants: Sequence[str], seeds: Sequence[int], path: Path) -> Path | None:
    """learning_curves.png: training reward per env step, mean ± std over seeds, one panel per reward kind."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from baselines.hooks import CurveWriter

    panels = {"rule-based reward (EPDMS)": [], "learned reward (RWM prediction)": []}
    for variant in variants:
        curves = []
        for s in seeds:
            p = run_dir_of(out, variant, s) / "curve.csv"
            if p.is_file():
                rows = CurveWriter(p).rows()
                if rows:
                    curves.append((np.array([r["step"] for r in rows]), np.array([r["reward_mean"] for r in rows])))
        if not curves:
            continue
        cfg = read_json(run_dir_of(out, variant, seeds[0]) / "config.json") if (
            run_dir_of(out, variant, seeds[0]) / "config.json").is_file() else {"reward": "epdms"}
        key = "learned reward (RWM prediction)" if parse_reward(cfg.get("reward", "epdms")).learned else \
            "rule-based reward (EPDMS)"
        panels[key].append((variant, curves))
    if not any(panels.values()):
        return None
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=False)
    for ax, (title, entries) in zip(axes, panels.items()):
        for variant, curves in entries:
            n = min(len(c[0]) for c in curves)
            steps = curves[0][0][:n]
            values = np.stack([c[1][:n] for c in curves])
            mean, std = values.mean(0), values.std(0)
            ax.plot(steps, mean, label=f"{variant} (n={len(curves)})")
            ax.fill_between(steps, mean - std, mean + std, alpha=0.2)
        ax.set_title(title)
        ax.set_xlabel("env steps")
        ax.set_ylabel("mean training reward per rollout")
        ax.grid(alpha=0.3)
        if entries:
            ax.legend(fontsize=8)
    return save_figure(fig, path, "Baselines: training reward per env step (mean ± std over seeds)", dpi=110)


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


__all__ = ["SCORES", "TIMES", "collect_rows", "findings", "markdown", "plot_curves", "write_report"]
