"""MSD-style dataset folders (``dataset.json`` + imagesTr/labelsTr) and reproducible splits."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from .case import Case
from .errors import SparseSegError
from .io import case_id_from_path, load_case


@dataclass(frozen=True)
class CaseRef:
    """Where one case of a dataset lives on disk; loading is deferred so listing is cheap."""

    case_id: str
    image: Path
    label: Path | None


@dataclass(frozen=True)
class Dataset:
    """A list of cases with the class names from ``dataset.json``.

    ``modalities`` are dataset.json's channel names (MSD's ``modality``); ``channel`` is the one every case is
    read with (None: one-channel images).
    """

    root: Path
    name: str
    class_names: dict[int, str]
    cases: tuple[CaseRef, ...]
    modalities: dict[int, str] = field(default_factory=dict)
    channel: int | None = None

    def load(self, ref: CaseRef) -> Case:
        """Read one case with the dataset's class names (and its chosen channel)."""
        return load_case(ref.image, ref.label, ref.case_id, self.class_names, self.channel)

    def channel_note(self) -> str | None:
        """What a user should be told when a multi-modal dataset is read one channel at a time."""
        if self.channel is None or len(self.modalities) < 2:
            return None
        names = ", ".join(f"{index} {name}" for index, name in sorted(self.modalities.items()))
        return (f"{self.name} has {len(self.modalities)} channels ({names}); using channel {self.channel} "
                f"({self.modalities.get(self.channel, '?')}); choose another with --channel")

    def subset(self, case_ids: list[str]) -> Dataset:
        """The cases named in ``case_ids`` (in that order); unknown ids are an error."""
        by_id = {ref.case_id: ref for ref in self.cases}
        missing = [case_id for case_id in case_ids if case_id not in by_id]
        if missing:
            raise SparseSegError(
                f"{len(missing)} case id(s) not in dataset {self.root}: {', '.join(missing[:5])}",
                "Case ids are image file names without extension, e.g. hippocampus_001.",
            )
        return replace(self, cases=tuple(by_id[case_id] for case_id in case_ids))


def load_dataset(root: str | os.PathLike, channel: int | str | None = None) -> Dataset:
    """Read ``root/dataset.json`` (Medical Segmentation Decathlon layout) and check every file exists.

    ``channel`` (an index or a modality name from dataset.json) picks the channel of multi-modal images; a
    dataset that lists several modalities is read with its first (MSD puts the usual one first: FLAIR, T2).
    """
    root = Path(root)
    manifest = root / "dataset.json"
    if not root.is_dir():
        raise SparseSegError(f"dataset folder not found: {root}", "Give a folder holding dataset.json, imagesTr/ and labelsTr/.")
    if not manifest.is_file():
        raise SparseSegError(f"no dataset.json in {root}", "Use an MSD-style folder: dataset.json with a 'training' list.")
    try:
        meta = json.loads(manifest.read_text())
    except json.JSONDecodeError as error:
        raise SparseSegError(f"{manifest} is not valid JSON (line {error.lineno}: {error.msg})", "Fix the file.") from None
    entries = meta.get("training")
    if not isinstance(entries, list) or not entries:
        raise SparseSegError(f"{manifest} has no 'training' list", "List cases as {\"image\": ..., \"label\": ...}.")
    refs = []
    missing = []
    for entry in entries:
        image = (root / entry["image"]).resolve()
        label = (root / entry["label"]).resolve() if entry.get("label") else None
        for path in (image, label):
            if path is not None and not path.is_file():
                missing.append(str(path))
        refs.append(CaseRef(case_id_from_path(image), image, label))
    if missing:
        raise SparseSegError(
            f"dataset.json in {root} points to {len(missing)} missing file(s), e.g. {missing[0]}",
            "Fix the paths in dataset.json (they are relative to its folder) or restore the files.",
        )
    labels = {int(k): str(v) for k, v in meta.get("labels", {}).items() if int(k) != 0}
    modalities = _modalities(meta)
    return Dataset(root=root, name=str(meta.get("name", root.name)), class_names=labels, cases=tuple(refs),
                   modalities=modalities, channel=_channel(channel, modalities, manifest))


def _modalities(meta: dict) -> dict[int, str]:
    """dataset.json's channel names: MSD's ``modality`` or nnU-Net v2's ``channel_names``."""
    names = meta.get("modality") or meta.get("channel_names") or {}
    try:
        return {int(k): str(v) for k, v in names.items()} if isinstance(names, dict) else {}
    except ValueError:
        return {}


def _channel(channel: int | str | None, modalities: dict[int, str], manifest: Path) -> int | None:
    """The channel index to read: given as an index or a modality name; the first when several are listed."""
    if channel is None or channel == "":
        return 0 if len(modalities) > 1 else None
    text = str(channel).strip()
    if text.lstrip("-").isdigit():
        index = int(text)
        if modalities and index not in modalities:
            raise SparseSegError(f"channel {index} is not in {manifest}'s modalities",
                                 "Give one of: " + ", ".join(f"{i} ({n})" for i, n in sorted(modalities.items())) + ".")
        return index
    matches = [index for index, name in modalities.items() if name.lower() == text.lower()]
    if not matches:
        listed = ", ".join(f"{i} ({n})" for i, n in sorted(modalities.items())) or "none listed"
        raise SparseSegError(f"no modality named {text!r} in {manifest}", f"Give a channel index or name: {listed}.")
    return matches[0]


def split_cases(
    case_ids: list[str], fractions: tuple[float, float, float] = (0.7, 0.15, 0.15), seed: int = 0
) -> dict[str, list[str]]:
    """Shuffle ``case_ids`` with ``seed`` and cut them into train/val/test parts by ``fractions``.

    Validation and test get ``round(fraction * n)`` cases (at least one each when they are asked
    for and there are enough cases); training gets the rest.
    """
    if len(fractions) != 3 or abs(sum(fractions) - 1.0) > 1e-6 or min(fractions) < 0:
        raise SparseSegError(f"split fractions {fractions} must be three non-negative numbers summing to 1", "E.g. 0.7,0.15,0.15.")
    order = list(case_ids)
    np.random.default_rng(seed).shuffle(order)
    n = len(order)
    n_val = max(1 if fractions[1] > 0 and n >= 3 else 0, int(round(fractions[1] * n)))
    n_test = max(1 if fractions[2] > 0 and n >= 3 else 0, int(round(fractions[2] * n)))
    if n - n_val - n_test < 1:
        raise SparseSegError(f"{n} case(s) are too few to split into train/val/test", "Use a dataset with at least 3 cases.")
    return {"train": order[: n - n_val - n_test], "val": order[n - n_val - n_test : n - n_test], "test": order[n - n_test :]}


def kfold_cases(case_ids: list[str], folds: int, seed: int = 0) -> list[dict[str, list[str]]]:
    """K-fold cross-validation: each fold tests on one part and trains on the rest (no validation part)."""
    if folds < 2 or folds > len(case_ids):
        raise SparseSegError(f"--folds {folds} is not possible with {len(case_ids)} cases", "Use 2 <= K <= number of cases.")
    order = list(case_ids)
    np.random.default_rng(seed).shuffle(order)
    parts = [order[i::folds] for i in range(folds)]
    return [
        {"train": [c for j, p in enumerate(parts) if j != i for c in p], "val": [], "test": parts[i]} for i in range(folds)
    ]
