"""The picture a person looks at first: image, annotation, result and reference side by side."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .case import Case

_CLASS_COLORS = [(0.95, 0.3, 0.2), (0.2, 0.6, 1.0), (0.3, 0.85, 0.3), (1.0, 0.8, 0.1), (0.8, 0.3, 0.9)]


def _overlay(axis, image: np.ndarray, label: np.ndarray | None, unknown: np.ndarray | None = None, colors=None) -> None:
    axis.imshow(image, cmap="gray", interpolation="nearest")
    if label is not None:
        rgba = np.zeros(label.shape + (4,))
        for value in range(1, int(label.max()) + 1 if label.size else 1):
            color = (colors or {}).get(value, _CLASS_COLORS[(value - 1) % len(_CLASS_COLORS)])
            rgba[label == value] = (*color[:3], 0.55)
        axis.imshow(rgba, interpolation="nearest")
    if unknown is not None:
        shade = np.zeros(unknown.shape + (4,))
        shade[unknown] = (0.0, 0.0, 0.0, 0.55)
        axis.imshow(shade, interpolation="nearest")
    axis.set_xticks([])
    axis.set_yticks([])


def _views(shape: tuple[int, int, int], annotated: np.ndarray | None) -> list[tuple[str, int, int]]:
    """(name, axis, index) of the slices to show: the annotated slice, two others, one cross-section."""
    depth = shape[0]
    centre = depth // 2
    if annotated is not None and annotated.any():
        counts = annotated.reshape(depth, -1).sum(1)
        centre = int(np.argmax(counts))
    others = [max(0, centre - depth // 4), min(depth - 1, centre + depth // 4)]
    return [("slice %d (annotated)" % centre if annotated is not None else "slice %d" % centre, 0, centre)] + [
        (f"slice {index}", 0, index) for index in others
    ] + [(f"cross-section j={shape[1] // 2}", 1, shape[1] // 2)]


def save_case_picture(
    case: Case, result: np.ndarray, path: Path, title: str = "", metrics_text: str = ""
) -> Path:
    """A grid: one row per view, columns image / annotation (unknown shaded) / result / reference."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    views = _views(case.image.shape, case.annotated)
    columns = ["image", "annotation (dark = unknown)", "SparseSeg result", "reference"]
    figure, axes = plt.subplots(len(views), len(columns), figsize=(2.6 * len(columns), 2.4 * len(views)), dpi=100)
    for row, (name, axis_index, index) in enumerate(views):
        take = lambda volume: None if volume is None else np.take(volume, index, axis=axis_index)  # noqa: E731
        image = take(case.image)
        annotated = take(case.annotated) if case.annotated is not None else None
        sparse = None if case.label is None or annotated is None else np.where(annotated, take(case.label), 0)
        panels = [
            (None, None),
            (sparse, None if annotated is None else ~annotated),
            (take(result), None),
            (take(case.label), None),
        ]
        for column, (label, unknown) in enumerate(panels):
            axis = axes[row, column]
            _overlay(axis, image, label, unknown, case.class_colors)
            if row == 0:
                axis.set_title(columns[column], fontsize=9)
            if column == 0:
                axis.set_ylabel(name, fontsize=8)
    figure.suptitle(f"{title}\n{metrics_text}".strip(), fontsize=10)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return path
