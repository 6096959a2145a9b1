"""Matplotlib figures for the reports (written as PNG; the Agg backend needs no display)."""

from __future__ import annotations

import pathlib
import warnings

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from fer_tf.files import atomic_path  # noqa: E402


def _save(fig, path):
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def training_curves(histories, path, title=None):
    """Training loss and validation accuracy per epoch, one line per run (Fig. 5 and 6)."""
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    for name, history in histories.items():
        epochs = [row["epoch"] for row in history]
        ax_loss.plot(epochs, [row.get("loss", np.nan) for row in history], label=name)
        if any("val_accuracy" in row for row in history):
            ax_acc.plot(epochs, [row.get("val_accuracy", np.nan) for row in history], label=name)
    ax_loss.set(xlabel="epoch", ylabel="training loss", title="training loss")
    ax_acc.set(xlabel="epoch", ylabel="validation accuracy", title="validation accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def mean_curves(groups, path, title=None, panels=(("loss", "training loss"),
                                                  ("val_accuracy", "inner validation accuracy"),
                                                  ("fold_accuracy", "test-fold accuracy (not used to select)"))):
    """Per-epoch mean (line) and standard deviation (band) over many runs, one colour per group
    (``{name: [history, ...]}``), one panel per history key of ``panels`` that any run has."""
    shown = [(key, label) for key, label in panels
             if any(key in row for runs in groups.values() for h in runs for row in h)]
    fig, axes = plt.subplots(1, max(len(shown), 1), figsize=(5.2 * max(len(shown), 1), 4), squeeze=False)
    for ax, (key, label) in zip(axes[0], shown):
        for name, runs in groups.items():
            length = max((len(h) for h in runs), default=0)
            values = np.full((len(runs), length), np.nan)
            for i, h in enumerate(runs):
                for j, row in enumerate(h):
                    values[i, j] = row.get(key, np.nan)
            if not length or np.all(np.isnan(values)):
                continue
            epochs = np.arange(1, length + 1)
            with warnings.catch_warnings():  # epochs that no run reached are all NaN
                warnings.simplefilter("ignore", RuntimeWarning)
                mean, std = np.nanmean(values, 0), np.nanstd(values, 0)
            line, = ax.plot(epochs, mean, label=f"{name} ({len(runs)} runs)")
            ax.fill_between(epochs, mean - std, mean + std, color=line.get_color(), alpha=0.15)
        ax.set(xlabel="epoch", title=label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def confusion_matrix(matrix, labels, path, title="confusion matrix"):
    """Row-normalised confusion matrix (rows = true class), percentages in the cells (Table 1)."""
    matrix = np.asarray(matrix, dtype=float)
    rates = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(6, 5))
    ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    for i in range(len(labels)):
        for j in range(len(labels)):
            ax.text(j, i, f"{100 * rates[i, j]:.0f}", ha="center", va="center",
                    color="white" if rates[i, j] > 0.5 else "black", fontsize=8)
    return _save(fig, path)


def embedding_scatter(points, expression, subject, path, title="test features"):
    """2-D embedding of features coloured by expression (left) and by subject (right)."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 5))
    for ax, values, name in ((axes[0], expression, "expression"), (axes[1], subject, "subject")):
        names = sorted(set(values))
        cmap = plt.get_cmap("tab10" if len(names) <= 10 else "nipy_spectral")
        for k, value in enumerate(names):
            sel = np.asarray(values) == value
            ax.scatter(points[sel, 0], points[sel, 1], s=8, color=cmap(k / max(len(names) - 1, 1)),
                       label=value if len(names) <= 10 else None)
        ax.set(title=f"{title}, coloured by {name}", xticks=[], yticks=[])
        if len(names) <= 10:
            ax.legend(fontsize=7, markerscale=2)
    return _save(fig, path)


def expression_timeline(target, video, labels, times, probabilities, unit, people=None):
    """``fer-tf predict --timeline``: each label's probability (the tracked face, averaged over
    --window frames) against time (``unit`` "s") or frame number; gaps are frames without a face.
    With ``people`` (``{person: [frames, labels] probabilities}``, NaN rows where the person is not
    in the frame; ``probabilities`` is then ignored), one panel per person, sharing the time axis.
    Written atomically to ``target``; the title names the ``video``."""
    panels = ({f"{pathlib.Path(video).name}: {name}": probs for name, probs in people.items()}
              if people else {f"{pathlib.Path(video).name}: expressions of the largest face": probabilities})
    width = min(16.0, 6.0 + len(times) / 200.0)
    fig, axes = plt.subplots(len(panels), 1, figsize=(width, 1.0 + 3.0 * len(panels)), dpi=100,
                             sharex=True, squeeze=False)
    for ax, (title, probs) in zip(axes[:, 0], panels.items()):
        probs = np.asarray(probs, dtype=float).reshape(-1, len(labels))
        for j, name in enumerate(labels):
            ax.plot(times, probs[:, j], label=name, linewidth=1.2)
        ax.set_ylabel("probability")
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0, 0].legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
    axes[-1, 0].set_xlabel("time (s)" if unit == "s" else "frame")
    if len(times):
        axes[-1, 0].set_xlim(times[0], max(times[-1], times[0] + 1e-6))
    fig.tight_layout()
    try:
        with atomic_path(target) as tmp:
            fig.savefig(tmp)
    finally:
        plt.close(fig)
