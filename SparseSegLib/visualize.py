"""The picture a person looks at first: per scan, image / what was painted / results / reference side by side.

Why these views: a single-scan result goes wrong away from the painted slice (the object's ends, where a
propagation runs out or floods), so besides the painted slice each scan shows two slices a quarter of the way in
from the object's ends and a cross-section through the object's middle, on which the painted slice is a line
and the whole depth of the result can be judged at a glance.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .case import Case

_CLASS_COLORS = [(0.95, 0.3, 0.2), (0.2, 0.6, 1.0), (0.3, 0.85, 0.3), (1.0, 0.8, 0.1), (0.8, 0.3, 0.9)]


def default_class_colors(values) -> dict[int, tuple[float, float, float]]:
    """The colour of each class value (1, 2, ...) when the data names none: the pictures' and the demo's
    ``.seg.nrrd`` segments', so a structure has one colour everywhere."""
    return {int(v): _CLASS_COLORS[(int(v) - 1) % len(_CLASS_COLORS)] for v in values if int(v) > 0}


def _overlay(axis, image: np.ndarray, label: np.ndarray | None, unknown: np.ndarray | None = None, colors=None,
             aspect: float | None = None) -> None:
    """``image`` in grey with ``label``'s classes in colour and ``unknown`` (not annotated) shaded dark;
    ``aspect`` = row spacing / column spacing, so anisotropic voxels are not drawn squashed."""
    axis.imshow(image, cmap="gray", interpolation="nearest", aspect=aspect or "equal")
    if label is not None:
        rgba = np.zeros(label.shape + (4,))
        for value in range(1, int(label.max()) + 1 if label.size else 1):
            color = (colors or {}).get(value, _CLASS_COLORS[(value - 1) % len(_CLASS_COLORS)])
            rgba[label == value] = (*color[:3], 0.55)
        axis.imshow(rgba, interpolation="nearest", aspect=aspect or "equal")
    if unknown is not None:
        shade = np.zeros(unknown.shape + (4,))
        shade[unknown] = (0.0, 0.0, 0.0, 0.55)
        axis.imshow(shade, interpolation="nearest", aspect=aspect or "equal")
    axis.set_xticks([])
    axis.set_yticks([])


@dataclass
class ScanPicture:
    """One scan's rows in :func:`save_scans_picture`.

    ``case.label`` is the full reference and ``case.annotated`` what the user painted; ``results`` are the
    label maps to show, each with its column title (e.g. ``("after Start", label)``).
    """

    case: Case
    results: list[tuple[str, np.ndarray]] = field(default_factory=list)
    note: str = ""


def object_views(reference: np.ndarray, painted: np.ndarray | None) -> list[tuple[str, int, int]]:
    """``(name, axis, index)`` of the views of one scan: the painted slice along k (the one with the most painted
    voxels; the object's middle when nothing is painted), two slices a quarter of the way in from the object's
    ends along k, and the cross-section along j through the object's middle."""
    reference = np.asarray(reference)
    depth = reference.shape[0]
    along_k = np.flatnonzero(reference.any(axis=(1, 2)))
    along_j = np.flatnonzero(reference.any(axis=(0, 2)))
    first, last = (int(along_k[0]), int(along_k[-1])) if along_k.size else (0, depth - 1)
    if painted is not None and np.any(painted):
        centre, name = int(np.argmax(np.asarray(painted).reshape(depth, -1).sum(1))), "painted slice k={}"
    else:
        centre, name = (first + last) // 2, "slice k={}"
    quarter = (last - first) // 4
    others = sorted({min(max(first + quarter, 0), depth - 1), min(max(last - quarter, 0), depth - 1)} - {centre})
    column = int(along_j[along_j.size // 2]) if along_j.size else reference.shape[1] // 2
    return ([(name.format(centre), 0, centre)] + [(f"slice k={k}", 0, k) for k in others]
            + [(f"cross-section j={column}", 1, column)])


def save_scans_picture(scans: list[ScanPicture], path: str | Path, title: str = "") -> Path:
    """A grid with :func:`object_views` rows per scan and the columns image / painted (dark = not painted) /
    each result / reference; a scan's name and ``note`` label its first row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not scans:
        raise ValueError("no scan to draw")
    if len({tuple(name for name, _ in scan.results) for scan in scans}) != 1:
        raise ValueError("every scan must show the same results (one column each)")
    titles = ["image", "painted (dark = not painted)", *(name for name, _ in scans[0].results), "reference"]
    rows = [(scan, view) for scan in scans for view in object_views(scan.case.label, scan.case.annotated)]
    height = 2.1 * len(rows) + 0.6
    figure, axes = plt.subplots(len(rows), len(titles), figsize=(2.3 * len(titles) + 1.8, height), dpi=80,
                                squeeze=False)
    previous = None
    for row, (scan, (name, axis_index, index)) in enumerate(rows):
        case = scan.case
        take = lambda volume: None if volume is None else np.take(volume, index, axis=axis_index)  # noqa: E731
        spacing = [s for a, s in enumerate(case.geometry.spacing_kji) if a != axis_index]
        painted = take(case.annotated)
        panels = [(None, None), (None if painted is None else np.where(painted, take(case.label), 0),
                                 None if painted is None else ~painted)]
        panels += [(take(result), None) for _, result in scan.results] + [(take(case.label), None)]
        for column, (label, unknown) in enumerate(panels):
            _overlay(axes[row, column], take(case.image), label, unknown, case.class_colors, spacing[0] / spacing[1])
            if row == 0:
                axes[row, column].set_title(titles[column], fontsize=9)
        heading = f"{case.case_id}\n{scan.note}\n\n" if scan is not previous else ""
        axes[row, 0].set_ylabel(heading + name, fontsize=8, rotation=0, ha="right", va="center")
        previous = scan
    if title:
        figure.suptitle(title, fontsize=10)
    figure.tight_layout(rect=(0, 0, 1, 1 - 0.5 / height) if title else None)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return path
