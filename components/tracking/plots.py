"""Plots people would rather look at than read."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def accuracy_curve(history: list[dict], title: str):
    """Target-test accuracy against the number of target labels, one point per round."""
    fig, ax = plt.subplots(figsize=(5, 3.5))
    labels = [h["n_labels"] for h in history]
    acc = [100 * h["accuracy"] for h in history]
    ax.plot(labels, acc, marker="o")
    for h, x, y in zip(history, labels, acc):
        ax.annotate(str(h["round"]), (x, y), textcoords="offset points", xytext=(0, 5),
                    fontsize=7, ha="center")
    ax.set(xlabel="target labels", ylabel="target-test accuracy (%)", title=title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def comparison_curve(curves: dict[str, list[list[dict]]], title: str):
    """Mean ± std over seeds of accuracy vs labels, one line per strategy (Fig. 3/4 style)."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, runs in sorted(curves.items()):
        n = min(len(r) for r in runs)
        x = np.array([runs[0][i]["n_labels"] for i in range(n)])
        y = np.array([[100 * r[i]["accuracy"] for i in range(n)] for r in runs])
        mean, std = y.mean(0), y.std(0)
        ax.plot(x, mean, marker="o", label=f"{name} (n={len(runs)})")
        ax.fill_between(x, mean - std, mean + std, alpha=0.2)
    ax.set(xlabel="target labels", ylabel="target-test accuracy (%)", title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
