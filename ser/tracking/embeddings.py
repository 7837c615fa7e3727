"""t-SNE plots of the networks' last hidden features on the test folds (``plots.embeddings``).

After each fold's test, :func:`save_fold_embeddings` stores the fused vector z
(``net.embed``) of every test utterance under ``OUTPUT_DIR/embeddings/fold_KK.npz``.
After all folds, :func:`plot_run_embeddings` draws ``OUTPUT_DIR/embeddings_tsne.png``.

Each fold gets its own panel: the folds are different networks whose z spaces share no
coordinates, so pooling them into one t-SNE would mix incomparable vectors. Keeping the
per-fold files on disk also lets a resumed run plot folds finished before the restart.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ser.tracking.figures import literal

log = logging.getLogger(__name__)

EMBEDDINGS_DIR = "embeddings"
PLOT_FILE = "embeddings_tsne.png"


@dataclass(frozen=True)
class FoldEmbeddings:
    """The test utterances of one fold: z vectors, integer labels, manifest rows."""

    fold: int
    embeddings: np.ndarray  # (n, filters)
    labels: np.ndarray  # (n,)
    rows: np.ndarray  # (n,)


def fold_path(output_dir: Path, fold: int) -> Path:
    return Path(output_dir) / EMBEDDINGS_DIR / f"fold_{fold:02d}.npz"


@torch.no_grad()
def compute_embeddings(net: nn.Module, features: torch.Tensor, batch_size: int = 256) -> np.ndarray:
    """``net.embed`` of (N, frames, F) features in eval mode, as float32 (N, dim)."""
    was_training = net.training
    device = next(net.parameters()).device
    net.eval()
    try:
        chunks = [
            net.embed(features[start : start + batch_size].to(device)).float().cpu()
            for start in range(0, len(features), batch_size)
        ]
    finally:
        net.train(was_training)
    return torch.cat(chunks).numpy() if chunks else np.zeros((0, 0), dtype=np.float32)


def save_fold_embeddings(module: Any, datamodule: Any, fold: int, output_dir: Path) -> Path:
    """Store z of the fold's test rows (``datamodule.test_indices``) for the plot."""
    rows = np.asarray(datamodule.test_indices, dtype=np.int64)
    index = torch.from_numpy(rows)
    embeddings = compute_embeddings(module.net, datamodule.features[index])
    labels = datamodule.targets[index].cpu().numpy()
    path = fold_path(output_dir, fold)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:  # a handle: np.savez adds no suffix
            np.savez(stream, embeddings=embeddings, labels=labels, rows=rows, fold=fold)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def load_fold_embeddings(output_dir: Path, folds: Sequence[int]) -> list[FoldEmbeddings]:
    """The saved embeddings of ``folds`` that exist (missing ones are logged)."""
    loaded = []
    for fold in folds:
        path = fold_path(output_dir, fold)
        if not path.exists():
            log.warning("no embeddings for fold %d (%s); it is left out of the plot", fold, path)
            continue
        with np.load(path) as data:
            loaded.append(FoldEmbeddings(fold, data["embeddings"], data["labels"], data["rows"]))
    return loaded


def tsne_coordinates(embeddings: np.ndarray, seed: int = 0, perplexity: float = 30.0) -> np.ndarray:
    """2-D t-SNE coordinates (n, 2); perplexity is capped below n as t-SNE requires.

    Fewer than five points give no meaningful neighbourhoods; they are placed by their
    first two principal components instead.
    """
    n = len(embeddings)
    data = np.asarray(embeddings, dtype=np.float64)
    if n < 5:
        centred = data - data.mean(axis=0, keepdims=True) if n else data
        if n == 0 or centred.size == 0:
            return np.zeros((n, 2))
        _, _, components = np.linalg.svd(centred, full_matrices=False)
        projected = centred @ components[:2].T
        return np.pad(projected, ((0, 0), (0, 2 - projected.shape[1])))
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    tsne = TSNE(
        n_components=2,
        perplexity=min(perplexity, (n - 1) / 3),
        init="pca",
        learning_rate="auto",
        random_state=seed,
    )
    # One thread: a few hundred points take seconds, while OpenMP threads on a busy or
    # shared machine (e.g. next to other training runs) can take minutes.
    with threadpool_limits(limits=1):
        return tsne.fit_transform(data)


def plot_embeddings_tsne(
    folds: Sequence[FoldEmbeddings],
    class_names: Sequence[str],
    path: Path,
    seed: int = 0,
    title: str | None = None,
) -> dict[int, np.ndarray]:
    """Draw one t-SNE panel per fold, coloured by true class; return each fold's points."""
    if not folds:
        raise ValueError("no fold embeddings to plot")
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    colours = plt.get_cmap("tab10" if len(class_names) <= 10 else "tab20")
    columns = min(5, len(folds))
    rows = math.ceil(len(folds) / columns)
    legend_columns = min(len(class_names), 2 * columns + 1)
    legend_rows = math.ceil(len(class_names) / legend_columns)
    figure, axes = plt.subplots(
        rows, columns, figsize=(3.2 * columns, 3.2 * rows + 0.6 + 0.25 * legend_rows),
        squeeze=False, layout="constrained",
    )
    coordinates: dict[int, np.ndarray] = {}
    for axis, fold in zip(axes.flat, folds, strict=False):
        points = tsne_coordinates(fold.embeddings, seed=seed + fold.fold)
        coordinates[fold.fold] = points
        for label, name in enumerate(class_names):
            chosen = fold.labels == label
            if chosen.any():
                axis.scatter(
                    points[chosen, 0], points[chosen, 1], s=10, color=colours(label), label=literal(name)
                )
        axis.set_title(f"fold {fold.fold} ({len(points)} test utterances)", fontsize=9)
        axis.set_xticks([])
        axis.set_yticks([])
    for axis in list(axes.flat)[len(folds):]:
        axis.axis("off")
    handles = [
        plt.Line2D([], [], marker="o", linestyle="", color=colours(i), label=literal(name))
        for i, name in enumerate(class_names)
    ]
    figure.legend(
        handles=handles, loc="outside lower center", ncol=legend_columns, frameon=False,
        fontsize=8,
    )
    figure.suptitle(title or "t-SNE of the fused features z on each test fold", fontsize=10)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return coordinates


def plot_run_embeddings(
    output_dir: Path, class_names: Sequence[str], num_folds: int, seed: int = 0, title: str | None = None
) -> Path | None:
    """Plot the run's saved fold embeddings into ``OUTPUT_DIR/embeddings_tsne.png``."""
    folds = load_fold_embeddings(output_dir, range(num_folds))
    if not folds:
        log.warning("no fold embeddings under %s; no t-SNE plot", Path(output_dir) / EMBEDDINGS_DIR)
        return None
    path = Path(output_dir) / PLOT_FILE
    plot_embeddings_tsne(folds, class_names, path, seed=seed, title=title)
    log.info("wrote %s", path)
    return path
