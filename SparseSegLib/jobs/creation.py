"""Creating a job folder: one part of the GUI side's :class:`~SparseSegLib.jobs.client.Job`.

A job is created from arrays (written to ``inputs/``) or from files read in place; ``job.json`` is validated and
the annotated mask derived here, so a bad job is reported before any worker process starts. Kept apart from
:mod:`.client`, which starts, watches and stops the worker. Like the client it imports no torch: numpy and the
image I/O are imported when a job is created.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TypeVar

from ..errors import SparseSegError
from . import layout
from .atomic import atomic_write_json
from .schema import make_job, validate_job

JobT = TypeVar("JobT", bound="JobCreation")


class JobCreation:
    """Part of :class:`~.client.Job`: a new job folder, from arrays or from existing files."""

    @classmethod
    def create(
        cls: type[JobT],
        directory: str | os.PathLike,
        image,
        geometry,
        annotation,
        method: str,
        region: dict | None = None,
        mask=None,
        reference=None,
        classes: dict | None = None,
        parameters: dict | None = None,
        device: str = "auto",
        seed: int = 0,
        case_id: str = "case",
    ) -> JobT:
        """A job from arrays in ``(k, j, i)`` order on ``geometry``: the image, the user's painted label
        map and optionally an annotated ``mask`` (region kind "mask") and a full ``reference``.

        The inputs go to ``inputs/*.nrrd``; the annotated mask is derived once here, so an empty or
        unusable annotation is reported before any process starts.
        """
        import numpy as np

        from ..io import write_image
        from .regions import annotated_mask

        directory = cls._new_folder(directory)
        image, annotation = np.asarray(image), np.asarray(annotation)
        for name, array in (("image", image), ("annotation", annotation), ("mask", mask), ("reference", reference)):
            if array is not None and np.shape(array) != geometry.shape:
                raise SparseSegError(f"the {name} array has shape {np.shape(array)}, the geometry {geometry.shape}",
                                     "Give arrays in (k, j, i) order on the image's voxel grid.")
        if annotation.size and (annotation.min() < 0 or annotation.max() > 255):
            raise SparseSegError("the annotation holds values outside 0..255", "Give class values 0 (background) to 255.")
        region = dict(region or ({"kind": "mask"} if mask is not None else {"kind": "slices", "axis": "auto"}))
        inputs = directory / layout.INPUTS_DIR
        if region.get("kind") == "mask":
            if mask is None:
                raise SparseSegError("region kind 'mask' needs the mask array", "Pass mask=... to Job.create.")
            region["mask"] = f"{layout.INPUTS_DIR}/annotated.nrrd"
        job = make_job(method, f"{layout.INPUTS_DIR}/image.nrrd", f"{layout.INPUTS_DIR}/annotation.nrrd", region=region,
                       reference=f"{layout.INPUTS_DIR}/reference.nrrd" if reference is not None else None,
                       classes=classes, parameters=parameters, device=device, seed=seed, case_id=case_id)
        spec = validate_job(job, directory)
        annotated_mask(spec.region, annotation, geometry, None if mask is None else np.asarray(mask))
        write_image(image, geometry, inputs / "image.nrrd", compress=False)
        write_image(annotation.astype(np.uint8), geometry, inputs / "annotation.nrrd")
        if mask is not None:
            write_image((np.asarray(mask) != 0).astype(np.uint8), geometry, inputs / "annotated.nrrd")
        if reference is not None:
            write_image(np.asarray(reference).astype(np.uint8), geometry, inputs / "reference.nrrd")
        atomic_write_json(directory / layout.JOB_FILE, job)
        return cls(directory)

    @classmethod
    def create_from_files(
        cls: type[JobT],
        directory: str | os.PathLike,
        image: str | os.PathLike,
        annotation: str | os.PathLike,
        method: str,
        region: dict | None = None,
        reference: str | os.PathLike | None = None,
        classes: dict | None = None,
        parameters: dict | None = None,
        device: str = "auto",
        seed: int = 0,
        case_id: str | None = None,
    ) -> JobT:
        """A job that reads existing files in place (stored as absolute paths)."""
        from ..io import case_id_from_path

        directory = cls._new_folder(directory)
        for what, path in (("image", image), ("annotation", annotation), ("reference", reference)):
            if path is not None and not Path(path).is_file():
                raise SparseSegError(f"{what} file not found: {path}", "Check the path.")
        region = dict(region or {"kind": "slices", "axis": "auto"})
        if region.get("kind") == "mask" and region.get("mask") is not None:
            region["mask"] = str(Path(region["mask"]).resolve())
        job = make_job(method, Path(image).resolve(), Path(annotation).resolve(), region=region,
                       reference=Path(reference).resolve() if reference is not None else None, classes=classes,
                       parameters=parameters, device=device, seed=seed,
                       case_id=case_id or case_id_from_path(image))
        validate_job(job, directory)
        atomic_write_json(directory / layout.JOB_FILE, job)
        return cls(directory)

    @staticmethod
    def _new_folder(directory: str | os.PathLike) -> Path:
        directory = Path(directory).resolve()
        if (directory / layout.JOB_FILE).exists() or layout.complete_rounds(directory):
            raise SparseSegError(f"{directory} already holds a job",
                                 "Give a new folder, or resume the job that is there.")
        directory.mkdir(parents=True, exist_ok=True)
        return directory
