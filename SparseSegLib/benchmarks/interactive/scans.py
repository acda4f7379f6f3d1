"""Which scans the interactive benchmark plays, and where a simulated user paints on them.

Scans come from MSD-style folders (``dataset.json``). Each folder's case ids are put in one seeded order; the
first :data:`DEV_SCANS` are the *dev* part (pick settings there) and the rest the *report* part (report on those),
so the two never share a scan and a run on ``--split report`` is not tuned to its own scans. The mni152 template
is a single multi-class scan (grey and white matter); it belongs to no split and is played only on request.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...annotation import extent_slices, object_extent
from ...case import Case
from ...dataset import load_dataset
from ...errors import SparseSegError
from ...io import load_case

#: ``../shared/data`` beside the project.
DATA_ROOT = Path(__file__).resolve().parents[3].parent / "shared" / "data"
DEFAULT_DATASETS = ("left_atrium", "hippocampus")
#: Scans per data set in the dev part of the seeded order; the report part is the rest.
DEV_SCANS = 5
SPLITS = ("dev", "report")
#: Class names of the mni152 tissue map (``shared/data/README.md``).
MNI152_CLASSES = {1: "Grey matter", 2: "White matter"}


@dataclass(frozen=True)
class Scan:
    """One scan to play: its data set (the folder's name), case id, files and class names."""

    dataset: str
    case_id: str
    image: Path
    label: Path
    class_names: dict[int, str]
    channel: int | None = None  # of multi-channel images (dataset.json's modalities)

    @property
    def key(self) -> str:
        return f"{self.dataset}/{self.case_id}"

    def load(self) -> Case:
        return load_case(self.image, self.label, self.case_id, self.class_names, self.channel)

    def describe(self) -> dict:
        described = {"dataset": self.dataset, "case_id": self.case_id, "image": str(self.image), "label": str(self.label)}
        return described if self.channel is None else {**described, "channel": self.channel}


def seeded_order(case_ids: list[str], seed: int) -> list[str]:
    """``case_ids`` (sorted first, so the order does not depend on dataset.json's) shuffled by ``seed``."""
    ids = sorted(case_ids)
    return [ids[i] for i in np.random.default_rng(seed).permutation(len(ids))]


def choose_scans(folder: str | os.PathLike, split: str, cases: int, seed: int = 0,
                 dev_scans: int = DEV_SCANS, channel: int | str | None = None) -> list[Scan]:
    """The first ``cases`` scans of ``split`` in ``folder``'s seeded order (fewer when the part is smaller), read
    with ``channel`` where the images have several (default: the dataset's first modality)."""
    if split not in SPLITS:
        raise SparseSegError(f"unknown split {split!r}", f"Use one of {', '.join(SPLITS)}.")
    dataset = load_dataset(folder, channel)
    if note := dataset.channel_note():
        print(f"note: {note}", flush=True)
    refs = {ref.case_id: ref for ref in dataset.cases if ref.label is not None}
    if not refs:
        raise SparseSegError(f"{folder} has no labelled scan", "The benchmark scores against full reference labels.")
    order = seeded_order(list(refs), seed)
    part = order[:dev_scans] if split == "dev" else order[dev_scans:]
    name = Path(folder).resolve().name
    return [Scan(name, case_id, refs[case_id].image, refs[case_id].label, dict(dataset.class_names), dataset.channel)
            for case_id in part[:cases]]


def mni152_scan(folder: str | os.PathLike = DATA_ROOT / "mni152") -> Scan:
    """The mni152 T1 template with its tissue map, as one multi-class scan."""
    folder = Path(folder)
    image, label = folder / "t1.nii.gz", folder / "tissue.nii.gz"
    for path in (image, label):
        if not path.is_file():
            raise SparseSegError(f"mni152 file not found: {path}", "Give the folder that holds t1.nii.gz and tissue.nii.gz.")
    return Scan("mni152", "mni152", image, label, dict(MNI152_CLASSES))


def central_slice(reference: np.ndarray, axis: int = 0) -> int:
    """The slice along ``axis`` (0 = k) in the middle of the object's extent: the one a user paints first."""
    return extent_slices(reference, 1, axis)[0]


def slice_at(reference: np.ndarray, fraction: float, axis: int = 0) -> int:
    """The slice along ``axis`` at ``fraction`` of the object's extent (0: its first slice, 1: its last): a user
    who paints the slice where they happen to be rather than the middle one."""
    first, last = object_extent(reference, axis)
    return int(round(first + fraction * (last - first)))


def even_slices(reference: np.ndarray, count: int, axis: int = 0) -> list[int]:
    """``count`` slices evenly spread over the object's extent along ``axis`` (all of it when it is shorter);
    one slice is :func:`central_slice`."""
    first, last = object_extent(reference, axis)
    return extent_slices(reference, min(count, last - first + 1), axis)
