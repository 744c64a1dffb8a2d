"""The end-of-run report: a JSON summary, a short markdown page, and the plots."""

import json
import os
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from rmjax.train import metrics_io  # noqa: E402


def plot_curves(workdir: str, *, reference_accuracy: float | None = None) -> str:
  """Train loss / accuracy and eval accuracy / ECE against the step, saved as curves.png."""
  records = metrics_io.read_metrics(workdir)
  train = [r for r in records if r["split"] == "train"]
  evals = [r for r in records if r["split"] == "eval"]
  fig, axes = plt.subplots(1, 3, figsize=(15, 4))
  if train:
    steps = [r["step"] for r in train]
    axes[0].plot(steps, [r["loss"] for r in train], label="train")
  if evals:
    axes[0].plot([r["step"] for r in evals], [r["loss"] for r in evals], "o-", label="eval")
    axes[1].plot([r["step"] for r in evals], [r["accuracy"] for r in evals], "o-", label="eval")
    axes[2].plot([r["step"] for r in evals], [r["calibration_error"] for r in evals], "o-")
  if train:
    axes[1].plot(steps, [r["accuracy"] for r in train], alpha=0.5, label="train (batch)")
  if reference_accuracy is not None:
    axes[1].axhline(reference_accuracy, color="k", ls="--", label="Bayes-optimal")
  axes[0].set(title="Pairwise loss", xlabel="step")
  axes[1].set(title="Pairwise accuracy", xlabel="step", ylim=(0.4, 1.0))
  axes[2].set(title="Calibration error (ECE)", xlabel="step")
  axes[0].legend()
  axes[1].legend()
  fig.tight_layout()
  path = os.path.join(workdir, "curves.png")
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path


def plot_metrics(workdir: str, panels: list[tuple[str, list[tuple[str, str]]]], *,
                 filename: str = "curves.png") -> str:
  """Any task's curves: one panel per (title, [(split, metric), ...]) of metrics.jsonl,
  each metric against the step (metrics a split never logged are left out)."""
  records = metrics_io.read_metrics(workdir)
  fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
  for ax, (title, series) in zip(axes[0], panels):
    for split, key in series:
      rows = [r for r in records if r["split"] == split and key in r]
      if rows:
        ax.plot([r["step"] for r in rows], [r[key] for r in rows],
                "o-" if split == "eval" else "-", label=f"{split} {key}")
    ax.set(title=title, xlabel="step")
    if ax.get_legend_handles_labels()[0]:
      ax.legend(fontsize=8)
  fig.tight_layout()
  path = os.path.join(workdir, filename)
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path


def plot_reliability(workdir: str, bin_confidence, bin_accuracy, bin_count, *,
                     filename: str = "reliability.png",
                     title: str = "Reliability (final eval)") -> str:
  """Reliability diagram: predicted P(preferred) vs observed frequency, per nonempty bin."""
  conf, acc, count = (np.asarray(a) for a in (bin_confidence, bin_accuracy, bin_count))
  nonempty = count > 0
  fig, ax = plt.subplots(figsize=(5, 5))
  ax.plot([0, 1], [0, 1], "k--", label="perfect calibration")
  ax.plot(conf[nonempty], acc[nonempty], "o-", label="model")
  ax.set(xlabel="predicted P(preferred)", ylabel="observed frequency",
         title=title, xlim=(0, 1), ylim=(0, 1))
  ax.legend()
  fig.tight_layout()
  path = os.path.join(workdir, filename)
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path


def write_report(workdir: str, report: dict[str, Any]) -> str:
  """Writes report.json and a human-readable report.md; returns the markdown text."""
  with open(os.path.join(workdir, "report.json"), "w") as f:
    json.dump(report, f, indent=2, sort_keys=True)
  final = report.get("final_eval", {})
  lines = [f"# Run: {report.get('config_name', '')} ({report.get('task', '')})", ""]
  lines.append(f"- steps: {report.get('steps')}, wall time: {report.get('wall_time_s', 0):.1f} s")
  lines.append(f"- parameters: {report.get('num_params'):,}")
  for key in ("train_tokens_per_s", "train_real_tokens_per_s", "train_examples_per_s"):
    if key in report:
      lines.append(f"- {key}: {report[key]:,.0f}")
  lines.append("")
  lines.append("| final eval | value |")
  lines.append("|---|---|")
  for key, value in sorted(final.items()):
    lines.append(f"| {key} | {value:.4f} |" if isinstance(value, float) else f"| {key} | {value} |")
  data_info = report.get("data", {})
  if data_info:
    lines += ["", "## Data", "", "```", json.dumps(data_info, indent=2, default=str)[:4000], "```"]
  text = "\n".join(lines) + "\n"
  with open(os.path.join(workdir, "report.md"), "w") as f:
    f.write(text)
  return text
