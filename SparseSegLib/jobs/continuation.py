"""Continue a job: a new stage that resumes from an earlier job's newest complete round, with newly
painted (or corrected) slices as ground truth.

This is the review-and-correct loop of the Slicer module (Continue), of ``sparseseg run JOBDIR --continue
--annotation CORRECTED`` and of the interactive benchmark, in one place so that all three continue the
same way::

    job = continue_job(previous_jobdir, new_jobdir, label, mask, more_rounds=2)
    job.start(resume=True)            # or worker.run_job(new_jobdir, resume=True)

Why a new job folder rather than the same one: ``job.json`` describes one fixed set of inputs, and the
corrected annotation is a new input; the earlier stage's rounds must stay exactly as the user saw them.
The new folder therefore holds

* ``inputs/``: the same image (and reference) as hard links, the new annotation and its annotated mask
  (region kind ``mask``: every slice painted so far, along whatever axis it was painted);
* ``rounds/001..N/``: hard links to the earlier stage's complete rounds, so round numbers go on from
  where they stopped and ``--resume`` sees a complete history (a hard link, not a copy: no disk cost, and
  the worker only ever replaces files by renaming, so the earlier stage's files are never changed);
* ``checkpoint/round-N.pt``: a hard link to the newest checkpoint, from which the worker resumes: the
  network goes on training with the new ground truth instead of starting from scratch.

``job.json`` is written last: a folder without it is not a job, so an interrupted continuation never
leaves a job that cannot run. Where hard links are impossible (another file system), files are copied.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import SparseSegError
from . import layout
from .atomic import atomic_write_json
from .client import Job
from .regions import (AXIS_NAMES, correction_planes, leading_axis, painted_slices, propagation_axis,
                      single_view_axis, slices_mask, whole_slice_axis)
from .schema import DEFAULT_MORE_ROUNDS, JobSpec, make_job, read_job, validate_job

#: Methods that take slices painted across more than one axis (a correction made in another view): the
#: registration runs along one axis and the other slices are ground truth and show how far the object reaches
#: (:mod:`SparseSegLib.methods.propagate.volume`). The others need every slice across the job's one axis.
ANY_VIEW_METHODS = frozenset({"propagate"})
#: Image formats held in one file, which can be hard-linked as they are (.nhdr / .mhd have a second data file).
_SINGLE_FILE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha")


@dataclass
class Correction:
    """The next stage's ground truth: label map, annotated mask, and which slices were added: ``slices`` along
    ``axis`` (the job's, where the new paint lies on it), ``across`` other axes (``{axis: slices}``)."""

    label: np.ndarray
    mask: np.ndarray
    axis: int
    slices: list[int]
    across: dict[int, list[int]] = field(default_factory=dict)

    @property
    def count(self) -> int:
        return len(self.slices) + sum(len(s) for s in self.across.values())

    def describe(self) -> str:
        parts = []
        for axis, slices in [(self.axis, self.slices), *sorted(self.across.items())]:
            if slices or not parts:
                shown = ", ".join(map(str, slices[:12])) + (", ..." if len(slices) > 12 else "")
                parts.append(f"{len(slices)} along axis {axis} ({AXIS_NAMES[axis]})" + (f": {shown}" if slices else ""))
        return "newly painted slice(s): " + "; ".join(parts)


# --------------------------------------------------------------------------------------------------
# The new ground truth


def paste_slices(label: np.ndarray, mask: np.ndarray, source: np.ndarray, axis: int,
                 slices: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Copies of ``label`` / ``mask`` where ``slices`` along ``axis`` hold ``source`` and are annotated.

    A painted slice is ground truth as a whole: its unpainted voxels are background (as in the module).
    """
    label, mask = np.array(label, copy=True), np.array(mask, dtype=bool, copy=True)
    if slices:
        index: list = [slice(None)] * 3
        index[axis] = list(slices)
        label[tuple(index)] = np.asarray(source)[tuple(index)]
        mask[tuple(index)] = True
    return label, mask


def new_paint(previous_label: np.ndarray, previous_mask: np.ndarray, corrected: np.ndarray) -> np.ndarray:
    """Voxels where ``corrected`` says something new: paint outside the annotated voxels, another label on them."""
    return np.where(np.asarray(previous_mask, dtype=bool), corrected != previous_label, corrected > 0)


def split_planes(planes: dict[int, list[int]], prefer: int | None, label: np.ndarray) -> tuple[int | None, list[int], dict]:
    """``(axis, slices, across)`` of corrected slices for reports: the job's axis ``prefer`` where it has some,
    else the :func:`~.regions.leading_axis`; the other axes' slices in ``across``."""
    if not planes:
        return prefer, [], {}
    main = prefer if prefer in planes else leading_axis(planes, label)
    return main, planes[main], {a: s for a, s in planes.items() if a != main}


def changed_slices(previous_label: np.ndarray, previous_mask: np.ndarray, corrected: np.ndarray, axis: int) -> list[int]:
    """Slices along ``axis`` that carry paint in ``corrected`` and say something new: paint outside the
    annotated voxels, or another label on them (a re-painted slice replaces its earlier ground truth).

    A slice without any paint is never taken (a label map cannot tell "all background" from "not painted"),
    so a file that leaves out an earlier painted slice keeps that slice's ground truth rather than erasing it.
    """
    new = new_paint(previous_label, previous_mask, corrected)
    other = tuple(a for a in range(3) if a != axis)
    changed = set(np.flatnonzero(np.any(new, axis=other)).tolist())
    return [s for s in painted_slices(corrected, axis) if s in changed]


def job_slice_axis(spec: JobSpec, label: np.ndarray, mask: np.ndarray) -> int | None:
    """The slice axis of a job's annotation: its region's (``auto`` resolved as the worker does), the axis
    of a continued stage's whole-slice mask, or None for ROI boxes and full annotation."""
    kind = spec.region["kind"]
    if kind == "slices":
        return slices_mask(label, spec.region.get("axis", "auto"))[1]
    if kind == "mask":
        return propagation_axis(mask, label)  # slices across several axes: the one the method propagates
    return None


def corrected_annotation(previous_label: np.ndarray, previous_mask: np.ndarray, corrected: np.ndarray,
                         axis: int | None = None, job_axis: int | None = None, any_view: bool = False) -> Correction:
    """The next stage's ground truth from a label map holding every slice painted so far.

    ``axis``: the slice axis the user names (taken as given). ``any_view`` (a method of :data:`ANY_VIEW_METHODS`):
    the fewest whole slices along any axes that hold the new paint (:func:`~.regions.correction_planes`; the job's
    axis first where it ties), so a slice painted in another view is taken as that slice. Otherwise the job's
    slice axis ``job_axis``, unless the new paint lies on fewer slices along another axis (the user painted across
    another axis: an error naming it, since taking it along the job's axis would turn partly painted slices into
    background); without a job axis (ROI boxes), the axis along which the new paint touches the fewest slices.
    """
    previous_label, corrected = np.asarray(previous_label), np.asarray(corrected)
    if corrected.shape != previous_label.shape:
        raise SparseSegError(f"the corrected label map has shape {corrected.shape}, the job's annotation "
                             f"{previous_label.shape}", "Export the corrected label map on the job's image grid.")
    if axis is None and any_view:
        planes = {}
        for a, found in correction_planes(new_paint(previous_label, previous_mask, corrected), prefer=job_axis).items():
            carrying = set(painted_slices(corrected, a))  # a slice without paint is never taken (see changed_slices)
            if kept := [s for s in found if s in carrying]:
                planes[a] = kept
        label, mask = previous_label, previous_mask
        for a, slices in planes.items():
            label, mask = paste_slices(label, mask, corrected, a, slices)
        main, slices, across = split_planes(planes, job_axis, corrected)
        return Correction(label, mask, int(0 if main is None else main), slices, across)
    if axis is None:
        counts = [len(changed_slices(previous_label, previous_mask, corrected, a)) for a in range(3)]
        axis, fewest = single_view_axis(counts, job_axis)
        if fewest is not None:
            raise SparseSegError(
                f"the new paint lies on {counts[fewest]} slice(s) along axis {fewest} ({AXIS_NAMES[fewest]}) but on "
                f"{counts[job_axis]} along the job's slice axis {job_axis} ({AXIS_NAMES[job_axis]})",
                f"Paint whole slices along axis {job_axis}, or name the axis you painted on (--axis {fewest}).")
    if axis not in (0, 1, 2):
        raise SparseSegError(f"slice axis {axis!r} is not an axis of a 3D volume", "Use 0 (k), 1 (j) or 2 (i).")
    slices = changed_slices(previous_label, previous_mask, corrected, axis)
    label, mask = paste_slices(previous_label, previous_mask, corrected, axis, slices)
    return Correction(label, mask, int(axis), slices)


# --------------------------------------------------------------------------------------------------
# The new stage


def ensure_not_running(jobdir: str | os.PathLike) -> None:
    """Raise if a worker holds the job's lock (a job run by the Slicer module, ``sparseseg run`` or a
    client: the lock is the one sign all of them leave)."""
    from ..worker import JobLock

    lock = JobLock(Path(jobdir))
    try:
        lock.acquire()
    except SparseSegError:
        raise SparseSegError(f"the job {jobdir} is still running",
                             "Wait for it to finish, or stop it (create its CANCEL file) before continuing.") from None
    finally:
        lock.release()


def default_stage_folder(previous: str | os.PathLike) -> Path:
    """Where the next stage goes by default: ``.../stage-N`` -> ``.../stage-N+1`` (the module's layout),
    any other ``JOBDIR`` -> ``JOBDIR-stage-2`` beside it."""
    previous = Path(previous).resolve()
    match = re.fullmatch(r"(.*?)stage-(\d+)", previous.name)
    if match:
        return previous.with_name(f"{match.group(1)}stage-{int(match.group(2)) + 1}")
    return previous.with_name(f"{previous.name}-stage-2")


def _link_or_copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def _carry_input(source: Path, folder: Path, stem: str) -> str:
    """Bring an input file of the earlier stage into ``folder/inputs``; returns its path relative to ``folder``."""
    from ..io import read_image, write_image

    name = source.name.lower()
    suffix = next((s for s in (".seg.nrrd", *_SINGLE_FILE_SUFFIXES) if name.endswith(s)), None)
    if suffix is None:  # a two-file format (.nhdr, .mhd): write it again as one NRRD
        array, geometry = read_image(source)
        suffix = ".nrrd"
        write_image(array, geometry, folder / layout.INPUTS_DIR / f"{stem}{suffix}", compress=False)
    else:
        _link_or_copy(source, folder / layout.INPUTS_DIR / f"{stem}{suffix}")
    return f"{layout.INPUTS_DIR}/{stem}{suffix}"


def _image_geometry(path: Path):
    import SimpleITK as sitk

    from ..io import geometry_of

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        raise SparseSegError(f"cannot read the job's image {path}", "The earlier job's inputs must still exist.") from None
    return geometry_of(reader)


def continue_job(previous_jobdir: str | os.PathLike, new_jobdir: str | os.PathLike, label: np.ndarray,
                 mask: np.ndarray, more_rounds: int | None = None, parameters: dict | None = None,
                 device: str | None = None) -> Job:
    """Create the next stage of ``previous_jobdir`` in ``new_jobdir`` (not started: ``start(resume=True)``).

    ``label`` / ``mask``: the full ground truth of the new stage (every slice painted so far and the mask of
    annotated voxels) on the job's image grid. Rounds: when the earlier job's ``parameters.rounds`` is null
    (the method decides when it is done) it stays null; otherwise the new stage runs ``more_rounds`` (default
    :data:`DEFAULT_MORE_ROUNDS`) after the newest complete round. ``parameters`` (default: the earlier job's)
    and ``device`` let the module apply settings the user changed between stages; method, classes, seed and
    case id are always the earlier job's, since the checkpoint belongs to them.
    """
    from ..annotation import check_annotation
    from ..io import write_image

    previous = Path(previous_jobdir).resolve()
    spec = read_job(previous)
    ensure_not_running(previous)
    done = layout.last_complete_round(previous)
    if done == 0 or not layout.checkpoints(previous).get(done):
        raise SparseSegError(f"{previous} has no complete round to continue from",
                             "Start the job again (its first round never finished).")
    geometry = _image_geometry(spec.image)
    label, mask = np.asarray(label), np.asarray(mask, dtype=bool)
    for name, array in (("label map", label), ("annotated mask", mask)):
        if array.shape != geometry.shape:
            raise SparseSegError(f"the new {name} has shape {array.shape}, the job's image {geometry.shape}",
                                 "Give arrays in (k, j, i) order on the job's image grid.")
    if label.size and (label.min() < 0 or label.max() > 255):
        raise SparseSegError("the new label map holds values outside 0..255", "Give class values 0 (background) to 255.")
    check_annotation(label, mask)
    if more_rounds is not None and int(more_rounds) < 1:
        raise SparseSegError(f"{more_rounds} more rounds is not a continuation", "Ask for at least one more round.")
    chosen = dict(spec.raw.get("parameters", {}) if parameters is None else parameters)
    if spec.parameters.get("rounds") is None:
        chosen["rounds"] = None
    else:
        chosen["rounds"] = done + int(DEFAULT_MORE_ROUNDS if more_rounds is None else more_rounds)

    folder = Job._new_folder(new_jobdir)
    image = _carry_input(spec.image, folder, "image")
    reference = _carry_input(spec.reference, folder, "reference") if spec.reference is not None else None
    write_image(label.astype(np.uint8), geometry, folder / layout.INPUTS_DIR / "annotation.nrrd")
    write_image(mask.astype(np.uint8), geometry, folder / layout.INPUTS_DIR / "annotated.nrrd")
    job = make_job(spec.method, image, f"{layout.INPUTS_DIR}/annotation.nrrd",
                   region={"kind": "mask", "mask": f"{layout.INPUTS_DIR}/annotated.nrrd"}, reference=reference,
                   classes=spec.raw.get("classes"), parameters=chosen, device=device or spec.device, seed=spec.seed,
                   case_id=spec.case_id, description=f"continues {previous} after round {done}")
    validate_job(job, folder)
    for number in range(1, done + 1):
        for path in layout.round_dir(previous, number).iterdir():
            _link_or_copy(path, layout.round_dir(folder, number) / path.name)
    _link_or_copy(layout.checkpoint_path(previous, done), layout.checkpoint_path(folder, done))
    atomic_write_json(folder / layout.JOB_FILE, job)  # last: now it is a job
    return Job(folder)


def continue_from_annotation(previous_jobdir: str | os.PathLike, corrected_path: str | os.PathLike,
                             new_jobdir: str | os.PathLike | None = None, more_rounds: int | None = None,
                             axis: int | None = None) -> tuple[Job, Correction]:
    """``sparseseg run JOBDIR --continue --annotation CORRECTED``: the next stage from a label map (or
    ``.seg.nrrd``) holding every slice painted so far, with the same class values as the job.

    The new ground truth is the job's annotation plus every slice along the job's slice axis (or ``axis``)
    that carries new paint in the file (:func:`corrected_annotation`). No new slice is not an error: the
    stage then goes on training on the same annotation, as the module's Continue does without edits
    (the caller warns). ``new_jobdir`` defaults to :func:`default_stage_folder`.
    """
    from ..io import read_annotation
    from ..worker import read_job_case

    previous = Path(previous_jobdir)
    spec = read_job(previous)
    case, _ = read_job_case(spec)
    corrected, _, _ = read_annotation(corrected_path, case.geometry)
    job_axis = None if axis is not None else job_slice_axis(spec, case.label, case.annotated)
    correction = corrected_annotation(case.label, case.annotated, corrected, axis=axis, job_axis=job_axis,
                                      any_view=spec.method in ANY_VIEW_METHODS)
    target = Path(new_jobdir) if new_jobdir is not None else default_stage_folder(previous)
    job = continue_job(previous, target, correction.label, correction.mask, more_rounds=more_rounds)
    return job, correction


__all__ = ["ANY_VIEW_METHODS", "Correction", "DEFAULT_MORE_ROUNDS", "continue_from_annotation", "continue_job", "corrected_annotation",
           "changed_slices", "default_stage_folder", "new_paint", "split_planes", "ensure_not_running", "job_slice_axis", "paste_slices",
           "whole_slice_axis"]
