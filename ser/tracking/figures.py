"""The figures of a finished run, drawn into its output directory from its own records.

- `confusion_matrix.png`: the test confusion matrices summed over the folds, as counts
  and as row-normalised recall;
- `folds.png`: test UAR and WAR per fold, with their mean +- sample std;
- `curves.png`: training loss and UAR per epoch of every fold, and validation loss and
  UAR where the run has a validation split (ser.tracking.history).

They are read from results.json's fold records and `history/fold_KK.json`, not from W&B,
so they exist with W&B off or offline; the summary W&B run logs the same files. Drawn
with matplotlib's Agg canvas (files only, no display, no pyplot state), at fixed sizes
(`FIGURE_SIZES` x `DPI` pixels).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ser.tracking.history import load_histories

CONFUSION_FILE = "confusion_matrix.png"
FOLDS_FILE = "folds.png"
CURVES_FILE = "curves.png"
DPI = 100
# Width, height in inches of each figure (times DPI: the PNG's size in pixels).
FIGURE_SIZES = {CONFUSION_FILE: (12.0, 5.5), FOLDS_FILE: (9.0, 5.0), CURVES_FILE: (12.0, 5.5)}


def new_figure(name: str) -> Any:
    """A matplotlib Figure on an Agg canvas, of the size `FIGURE_SIZES` gives `name`."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=FIGURE_SIZES[name], dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def save(figure: Any, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=DPI)  # no bbox_inches="tight": the size stays FIGURE_SIZES'
    return path


def summed_confusion(rows: Sequence[Mapping[str, Any]]) -> np.ndarray:
    """The folds' test confusion matrices (rows true, columns predicted), summed."""
    return np.sum([np.asarray(row["confusion_matrix"], dtype=np.int64) for row in rows], axis=0)


def row_recall(matrix: np.ndarray) -> np.ndarray:
    """Each true class's share of predictions per column; NaN for a class never tested."""
    totals = matrix.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, matrix / np.maximum(totals, 1), np.nan)


def literal(text: str) -> str:
    """`text` drawn as written: a class name is data, and matplotlib would read `$...$` in it
    as mathtext (and stop with an error at a symbol it does not know)."""
    return str(text).replace("$", r"\$")


def draw_matrix(axis: Any, values: np.ndarray, labels: list[str], text: list[list[str]], title: str) -> Any:
    shown = np.nan_to_num(values, nan=0.0)
    image = axis.imshow(shown, cmap="Blues", vmin=0.0, vmax=max(float(shown.max()), 1e-9))
    bright = 0.55 * float(shown.max())
    size = 9 if len(labels) <= 8 else 7
    for i, j in np.ndindex(values.shape):
        axis.text(j, i, text[i][j], ha="center", va="center", fontsize=size,
                  color="white" if shown[i, j] > bright else "black")
    ticks = range(len(labels))
    labels = [literal(label) for label in labels]
    axis.set_xticks(ticks, labels, rotation=45, ha="right")
    axis.set_yticks(ticks, labels)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    axis.set_title(title, fontsize=10)
    return image


def plot_confusion_matrix(
    matrix: np.ndarray, class_names: Sequence[str], path: Path, title: str, num_folds: int = 1,
) -> Path:
    """Counts and row-normalised recall (%) of a confusion matrix (the sum of `num_folds`
    folds' matrices), side by side."""
    matrix = np.asarray(matrix, dtype=np.int64)
    labels = list(class_names)
    recall = row_recall(matrix)
    figure = new_figure(CONFUSION_FILE)
    left, right = figure.subplots(1, 2)
    counts = [[str(int(v)) for v in row] for row in matrix]
    draw_matrix(left, matrix.astype(float), labels, counts, "counts")
    percents = [["-" if math.isnan(v) else f"{100 * v:.0f}" for v in row] for row in recall]
    image = draw_matrix(right, 100 * recall, labels, percents, "recall per true class (%)")
    image.set_clim(0, 100)
    figure.colorbar(image, ax=right, shrink=0.8)
    folds = f"summed over {num_folds} folds, " if num_folds > 1 else ""
    figure.suptitle(f"{title}\ntest confusion matrix, {folds}{int(matrix.sum())} utterances", fontsize=11)
    return save(figure, path)


def mean_std(values: np.ndarray) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof 1; 0 for one value), as results.json."""
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0


def plot_folds(
    indices: Sequence[int], uar: Sequence[float], war: Sequence[float], path: Path, title: str,
    index_name: str = "fold", num_classes: int | None = None,
) -> Path:
    """Bars of test UAR and WAR (%) per fold; dashed lines and bands: mean +- std."""
    figure = new_figure(FOLDS_FILE)
    axis = figure.subplots()
    positions = np.arange(len(indices))
    width = 0.38
    for offset, name, values, colour in ((-0.5, "UAR", uar, "tab:blue"), (0.5, "WAR", war, "tab:orange")):
        percent = 100 * np.asarray(values, dtype=np.float64)
        mean, std = mean_std(percent)
        bars = axis.bar(positions + offset * width, percent, width, color=colour, alpha=0.85,
                        label=f"{name} {mean:.2f} ± {std:.2f} %")
        if len(indices) <= 12:
            axis.bar_label(bars, fmt="%.1f", fontsize=7, padding=2)
        axis.axhline(mean, color=colour, linestyle="--", linewidth=1.2)
        axis.axhspan(mean - std, mean + std, color=colour, alpha=0.12, zorder=0)
    if num_classes:
        axis.axhline(100 / num_classes, color="grey", linestyle=":", linewidth=1,
                     label=f"chance {100 / num_classes:.1f} %")
    axis.set_xticks(positions, [str(i) for i in indices])
    axis.set_xlabel(index_name)
    axis.set_ylabel("test score (%)")
    axis.set_ylim(0, 105)
    axis.grid(axis="y", alpha=0.3)
    axis.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9,
                title="mean ± std\n(dashed lines, bands)", title_fontsize=8)
    axis.set_title(f"{title}\ntest UAR and WAR per {index_name}", fontsize=11)
    return save(figure, path)


def plot_curves(
    histories: Mapping[int, Sequence[Mapping[str, float]]], path: Path, title: str, index_name: str = "fold",
) -> Path:
    """Loss and UAR per epoch of every fold: training solid, validation dashed."""
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    figure = new_figure(CURVES_FILE)
    loss_axis, uar_axis = figure.subplots(1, 2)
    colours = figure_colours(len(histories))
    validation = False
    for colour, (_, epochs) in zip(colours, sorted(histories.items()), strict=True):
        for axis, metric, scale in ((loss_axis, "loss", 1.0), (uar_axis, "uar", 100.0)):
            for split, style in (("train", "-"), ("val", "--")):
                points = [(e["epoch"] + 1, scale * e[f"{split}/{metric}"]) for e in epochs
                          if f"{split}/{metric}" in e]
                if not points:
                    continue
                validation |= split == "val"
                x, y = zip(*points, strict=True)
                axis.plot(x, y, style, color=colour, linewidth=1.3,
                          marker="o" if len(points) < 12 else None, markersize=3)
    for axis, label in ((loss_axis, "loss (training: label-smoothed)"), (uar_axis, "UAR (%)")):
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.set_xlabel("epoch")
        axis.set_ylabel(label)
        axis.grid(alpha=0.3)
    handles = [Line2D([], [], color=c, label=f"{index_name} {f}") for c, f in zip(colours, sorted(histories), strict=True)]
    handles.append(Line2D([], [], color="black", linestyle="-", label="training"))
    if validation:
        handles.append(Line2D([], [], color="black", linestyle="--", label="validation"))
    figure.legend(handles=handles, loc="outside right center", fontsize=8, frameon=False)
    split = "training and validation" if validation else "training (no validation split)"
    figure.suptitle(f"{title}\n{split} curves per epoch", fontsize=11)
    return save(figure, path)


def figure_colours(count: int) -> list[Any]:
    from matplotlib import colormaps

    palette = colormaps["tab10" if count <= 10 else "tab20"]
    return [palette(i % palette.N) for i in range(count)]


def write_run_figures(
    output_dir: Path, rows: Sequence[Mapping[str, Any]], class_names: Sequence[str], title: str,
    index_key: str = "fold",
) -> dict[str, Path]:
    """Draw the three figures of a finished run from its fold records and histories.

    `rows`: the units' results as results.json lists them (each with `index_key`,
    test/uar, test/war and confusion_matrix). Returns {W&B key: file}; the curves are
    left out when no unit has a history (e.g. a run finished before histories existed).
    """
    output_dir = Path(output_dir)
    indices = [int(row[index_key]) for row in rows]
    figures = {
        "figures/confusion_matrix": plot_confusion_matrix(
            summed_confusion(rows), class_names, output_dir / CONFUSION_FILE, title, len(rows)
        ),
        "figures/folds": plot_folds(
            indices, [row["test/uar"] for row in rows], [row["test/war"] for row in rows],
            output_dir / FOLDS_FILE, title, index_name=index_key, num_classes=len(class_names),
        ),
    }
    histories = load_histories(output_dir, indices)
    if histories:
        figures["figures/curves"] = plot_curves(histories, output_dir / CURVES_FILE, title, index_key)
    return figures
