"""The hacking experiment's table (``hacking.md|.csv|.json``) and the gap curves of every remedy
(``gap_curves.png``)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from baselines.common import read_json, save_figure, write_json

COLUMNS = ("remedy", "seeds", "test_epdms", "test_epdms_std", "delta_vs_bc", "train_reward_start", "train_reward_end",
           "pred_reward_start", "pred_reward_end",
           "true_epdms_start", "true_epdms_end", "gap_start", "gap_end", "frac_overrated_end", "n_rated_high_end",
           "most_gamed", "most_gamed_gap", "ref_gap_end", "plan_shift_m", "wall_s", "refit_s_per_refit",
           "refit_fraction_of_wall")


def _mean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if len(values) else float("nan")


def summarise(name: str, runs: Sequence[Mapping[str, Any]], bc_epdms: float) -> dict[str, Any]:
    """One table row: means over seeds (std of the test EPDMS)."""
    epdms = [r["eval"]["epdms"] for r in runs]
    first = [r["probe_first"] for r in runs]
    last = [r["probe_last"] for r in runs]
    refit = [r["refit"] for r in runs if "refit" in r]
    row = {"remedy": name, "seeds": len(runs), "test_epdms": _mean(epdms), "test_epdms_std": float(np.std(epdms)),
           "delta_vs_bc": _mean(epdms) - bc_epdms,
           "most_gamed": runs[-1]["most_gamed"], "most_gamed_gap": _mean([r["most_gamed_gap"] for r in runs]),
           "wall_s": _mean([r["wall_s"] for r in runs]),
           "refit_s_per_refit": _mean([f["seconds_per_refit"] for f in refit]) if refit else None,
           "refit_fraction_of_wall": _mean([f["fraction_of_wall"] for f in refit]) if refit else None}
    for key in ("pred_reward", "true_epdms", "gap"):
        row[f"{key}_start"] = _mean([f[key] for f in first])
        row[f"{key}_end"] = _mean([f[key] for f in last])
    row["frac_overrated_end"] = _mean([f["frac_overrated"] for f in last])
    row["n_rated_high_end"] = _mean([f["n_rated_high"] for f in last])
    row["ref_gap_end"] = _mean([f["ref_gap"] for f in last]) if all("ref_gap" in f for f in last) else None
    row["plan_shift_m"] = _mean([f["plan_shift_m"] for f in last])
    curves = [r["train_reward"] for r in runs if r.get("train_reward")]
    row["train_reward_start"] = _mean([c[0][1] for c in curves]) if curves else None
    row["train_reward_end"] = _mean([c[-1][1] for c in curves]) if curves else None
    return row


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:+.{digits}f}" if digits < 0 else f"{value:.{digits}f}"
    return str(value)


def markdown(rows: Sequence[Mapping[str, Any]], bc: Mapping[str, Any], command: Mapping[str, Any],
             probe_scenes: int) -> str:
    """The table as Markdown."""
    lines = [
        f"Final policy on synthetic-test (leaderboard, {bc.get('scenes', '?')} scenes; BC alone = "
        f"{bc['epdms']:.4f}); probe = {probe_scenes} synthetic-val scenes, first -> last measurement.",
        "",
        "| remedy | test EPDMS | vs BC | training reward (rollouts) | probe pred reward | probe true EPDMS | probe gap | over-rated (end) | "
        "most over-predicted sub-score | gap of shipped RWM (end) | plan shift (m) | wall (s) | refit cost |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        refit = ("-" if r["refit_s_per_refit"] is None else
                 f"{r['refit_s_per_refit']:.1f} s/refit, {100 * r['refit_fraction_of_wall']:.0f} % of wall")
        std = f" ± {r['test_epdms_std']:.4f}" if r["seeds"] > 1 else ""
        train = ("-" if r["train_reward_start"] is None else
                 f"{r['train_reward_start']:.3f} -> {r['train_reward_end']:.3f}")
        lines.append(
            f"| {r['remedy']} | {r['test_epdms']:.4f}{std} | {r['delta_vs_bc']:+.4f} | {train} | "
            f"{r['pred_reward_start']:.3f} -> {r['pred_reward_end']:.3f} | "
            f"{r['true_epdms_start']:.3f} -> {r['true_epdms_end']:.3f} | "
            f"{r['gap_start']:+.3f} -> {r['gap_end']:+.3f} | {r['frac_overrated_end']:.2f} "
            f"({r['n_rated_high_end']:.0f} rated > 0.8) | {r['most_gamed']} ({r['most_gamed_gap']:+.3f}) | "
            f"{'-' if r['ref_gap_end'] is None else format(r['ref_gap_end'], '+.3f')} | {r['plan_shift_m']:.2f} | "
            f"{r['wall_s']:.0f} | {refit} |")
    lines += ["", f"Command: `{command}`"]
    return "\n".join(lines) + "\n"


def plot_gap_curves(histories: Mapping[str, Sequence[Mapping[str, float]]], path: str | Path,
                    title: str = "") -> Path:
    """Every remedy's probe curves: gap, predicted reward, true EPDMS, over-rated fraction (vs env steps)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = (("gap", "gap = predicted - true (probe mean)"), ("pred_reward", "predicted reward (trained-on model)"),
              ("true_epdms", "true EPDMS (scorer)"), ("frac_overrated", "frac over-rated (pred > .8, true < .5)"))
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4))
    for ax, (key, label) in zip(axes, panels):
        for name, hist in histories.items():
            ax.plot([h["step"] for h in hist], [h[key] for h in hist], "o-", ms=3, label=name)
        ax.set_title(label, fontsize=10)
        ax.set_xlabel("env steps")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return save_figure(fig, path, title)


def write_report(out: str | Path, results: Mapping[str, Sequence[Mapping[str, Any]]], bc: Mapping[str, Any],
                 command: Mapping[str, Any], probe_scenes: int) -> dict[str, Path]:
    """``hacking.md|.csv|.json`` and ``gap_curves.png`` (seed 0's curve per remedy, or the first seed run)."""
    out = Path(out)
    rows = [summarise(name, runs, bc["epdms"]) for name, runs in results.items()]
    files = {"md": out / "hacking.md", "csv": out / "hacking.csv", "json": out / "hacking.json",
             "png": out / "gap_curves.png"}
    files["md"].write_text(markdown(rows, bc, command, probe_scenes))
    with open(files["csv"], "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows([{k: r.get(k) for k in COLUMNS} for r in rows])
    write_json(files["json"], {"rows": rows, "bc": bc, "command": command, "probe_scenes": probe_scenes})
    histories = {}
    for name, runs in results.items():
        run_dir = out / name / f"seed{runs[0]['seed']}"
        hist = read_json(run_dir / "hacking_probe.json")["history"]
        histories[name] = hist
    plot_gap_curves(histories, files["png"], "ppo-vla-rwm: reward-model gap on the probe set, per remedy")
    return files


__all__ = ["COLUMNS", "markdown", "plot_gap_curves", "summarise", "write_report"]
