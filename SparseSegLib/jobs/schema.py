"""``job.json``: what a worker runs, versioned and validated before anything heavy happens.

Schema version 1 (paths are relative to the job directory unless absolute)::

    {
      "schema_version": 1,                      required; a newer version is refused, not guessed at
      "method": "sparse-only",                  required; checked against the method registry by the worker
      "case_id": "hippocampus_001",             optional name of the case (default "case")
      "description": "free text",               optional, ignored
      "inputs": {
        "image": "inputs/image.nrrd",           required: a 3D scalar volume (NRRD, NIfTI, ...)
        "annotation": "inputs/annotation.nrrd", required: label map or Slicer .seg.nrrd on the image grid
        "reference": null                       optional full label map: per-round metrics when given
      },
      "region": {"kind": "slices", "axis": "auto"},   which voxels the annotation covers (default):
          {"kind": "slices", "axis": "auto"|0|1|2}     every slice carrying paint along the axis (array
                                                       order k, j, i; auto = the axis with fewest painted slices)
          {"kind": "boxes", "boxes": [{"ijk": [[i0, j0, k0], [i1, j1, k1]]}, {"ras": [[x0, y0, z0], [x1, y1, z1]]}]}
                                                       ROI boxes, opposite corners, voxel (inclusive) or RAS mm
          {"kind": "mask", "mask": "inputs/annotated.nrrd"}   an explicit annotated mask (non-zero = annotated)
          {"kind": "full"}                             every voxel is annotated
      "classes": {"1": {"name": "Anterior", "color": [1.0, 0.5, 0.0]}, "2": "Posterior"},   optional
      "parameters": {                           optional, every key optional:
        "rounds": null,               rounds to run, each streams a full-volume result (null: the method decides,
                                      e.g. until every slice is labelled)
        "iterations_per_round": null, training iterations per round (default: the method's iterations for the budget / rounds)
        "iterations": null,           total iterations (overrides the budget's)
        "budget": "quick",            quick | paper
        "network": "2d",              2d | 3d
        "batch_size": null, "patch_size": null, "learning_rate": 0.001,
        "normalization": "zscore",    zscore | zscore-slice | none
        "augment": false,
        "save_probabilities": false,  also write probability-<class>.nrrd per round
        "save_uncertainty": false,    also write uncertainty.nrrd (normalised entropy, 0..1)
        "threads": null,              CPU threads for torch (default: torch's choice)
        "method_options": {}          method-specific settings, validated by the method
      },
      "device": "auto",                          auto | cpu | cuda | cuda:N | mps
      "seed": 0
    }

Validation names the key and what is allowed: unknown keys (with a "did you mean"), wrong types and
out-of-range values all raise :class:`~SparseSegLib.errors.SparseSegError`. This module needs only the
standard library, so the GUI process can validate a job before starting a worker.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import SparseSegError
from .checking import _Checker, _describe
from .layout import JOB_FILE

SCHEMA_VERSION = 1
#: Rounds a Continue adds: to a job with a fixed number of rounds (the module's continueRounds default), and to one
#: that leaves the rounds to a method that does not plan its stages itself (SparseSegLib.worker.stages).
DEFAULT_MORE_ROUNDS = 2

REGION_KINDS = ("slices", "boxes", "mask", "full")
AXIS_CHOICES = ("auto", 0, 1, 2)
DEVICE_PATTERN = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
NETWORKS = ("2d", "3d")
BUDGETS = ("quick", "paper")
NORMALIZATIONS = ("zscore", "zscore-slice", "none")

TOP_KEYS = ("schema_version", "method", "case_id", "description", "inputs", "region", "classes", "parameters",
            "device", "seed")
INPUT_KEYS = ("image", "annotation", "reference")

#: Parameter defaults; ``None`` means "the method's or budget's choice".
PARAMETER_DEFAULTS: dict[str, Any] = {
    "rounds": None,  # the method decides how many rounds it needs (see SparseSegLib.defaults)
    "iterations_per_round": None,
    "iterations": None,
    "budget": "quick",
    "network": "2d",
    "batch_size": None,
    "patch_size": None,
    "learning_rate": 1e-3,
    "normalization": "zscore",
    "augment": False,
    "save_probabilities": False,
    "save_uncertainty": False,
    "threads": None,
    "method_options": {},
}


@dataclass(frozen=True)
class JobSpec:
    """A validated job: absolute input paths, a normalised region and parameters with defaults filled in."""

    directory: Path
    method: str
    image: Path
    annotation: Path
    reference: Path | None
    region: dict
    classes: dict[int, dict]
    parameters: dict
    device: str = "auto"
    seed: int = 0
    case_id: str = "case"
    raw: dict = field(default_factory=dict, repr=False)

    @property
    def rounds(self) -> int | None:
        """Rounds asked for, or None: the method decides (the worker asks it, see ``planned_rounds``)."""
        value = self.parameters["rounds"]
        return None if value is None else int(value)

    def class_names(self) -> dict[int, str]:
        return {value: spec["name"] for value, spec in self.classes.items() if spec.get("name")}

    def class_colors(self) -> dict[int, tuple[float, float, float]]:
        return {value: tuple(spec["color"]) for value, spec in self.classes.items() if spec.get("color")}


def validate_job(data: Any, directory: str | os.PathLike = ".", source: str = JOB_FILE) -> JobSpec:
    """Check a parsed ``job.json`` and return the :class:`JobSpec` (raises SparseSegError naming the key)."""
    directory = Path(directory).resolve()
    check = _Checker(source)
    data = check.mapping(data, "the top level")
    check.known_keys(data, "", TOP_KEYS)
    for required in ("schema_version", "method", "inputs"):
        if required not in data:
            check.fail(f"missing key {required!r}", "", _REQUIRED_HINTS[required])
    version = check.integer(data["schema_version"], "schema_version", low=1)
    if version > SCHEMA_VERSION:
        check.fail("schema_version", f"is {version}, newer than this SparseSeg understands ({SCHEMA_VERSION})",
                   "Upgrade SparseSeg, or write the job with schema_version 1.")
    method = check.string(data["method"], "method", allowed_text="a method name, e.g. sparse-only")
    case_id = check.string(data.get("case_id", "case"), "case_id", allowed_text="a short name for the case")
    if "description" in data and not isinstance(data["description"], str):
        check.fail("description", f"must be a string, not {_describe(data['description'])}", "Write free text.")

    inputs = check.mapping(data["inputs"], "inputs")
    check.known_keys(inputs, "inputs", INPUT_KEYS)
    for required in ("image", "annotation"):
        if inputs.get(required) is None:
            check.fail(f"inputs.{required}", "is missing", f"Give the path of the {required} file in inputs.{required}.")
    image = check.path(inputs["image"], "inputs.image", directory)
    annotation = check.path(inputs["annotation"], "inputs.annotation", directory)
    reference = check.path(inputs["reference"], "inputs.reference", directory) if inputs.get("reference") is not None else None

    region = _validate_region(check, data.get("region", {"kind": "slices", "axis": "auto"}), directory)
    classes = _validate_classes(check, data.get("classes", {}))
    parameters = _validate_parameters(check, data.get("parameters", {}))
    device = check.string(data.get("device", "auto"), "device", pattern=DEVICE_PATTERN,
                          allowed_text="auto, cpu, cuda, cuda:N or mps")
    seed = check.integer(data.get("seed", 0), "seed", low=0)
    return JobSpec(directory=directory, method=method, image=image, annotation=annotation, reference=reference,
                   region=region, classes=classes, parameters=parameters, device=device, seed=seed,
                   case_id=case_id, raw=data)


_REQUIRED_HINTS = {
    "schema_version": f"Add \"schema_version\": {SCHEMA_VERSION}.",
    "method": "Add \"method\": \"sparse-only\" (or another method name).",
    "inputs": "Add \"inputs\": {\"image\": ..., \"annotation\": ...}.",
}


def _validate_region(check: _Checker, region: Any, directory: Path) -> dict:
    region = check.mapping(region, "region")
    kind = region.get("kind")
    if kind not in REGION_KINDS:
        check.fail("region.kind", f"is {_describe(kind)}, which is not allowed", f"Allowed: {', '.join(REGION_KINDS)}.")
    allowed = {"slices": ("kind", "axis"), "boxes": ("kind", "boxes"), "mask": ("kind", "mask"), "full": ("kind",)}[kind]
    check.known_keys(region, "region", allowed)
    if kind == "slices":
        axis = region.get("axis", "auto")
        if axis not in AXIS_CHOICES or isinstance(axis, bool):
            if isinstance(axis, str) and axis.strip().isdigit() and int(axis) in (0, 1, 2):
                axis = int(axis)
            else:
                check.fail("region.axis", f"is {_describe(axis)}, which is not allowed",
                           "Allowed: \"auto\", 0 (k, the slice stack), 1 (j) or 2 (i).")
        return {"kind": "slices", "axis": axis}
    if kind == "boxes":
        return {"kind": "boxes", "boxes": validate_boxes(region.get("boxes"), "region.boxes", check)}
    if kind == "mask":
        if region.get("mask") is None:
            check.fail("region.mask", "is missing", "Give the path of the annotated mask (non-zero = annotated).")
        return {"kind": "mask", "mask": check.path(region["mask"], "region.mask", directory)}
    return {"kind": "full"}


BOX_HINT = ('Give a list of boxes, each {"ijk": [[i0, j0, k0], [i1, j1, k1]]} (voxel corners, inclusive) '
            'or {"ras": [[x0, y0, z0], [x1, y1, z1]]} (RAS mm, as in 3D Slicer).')


def validate_boxes(boxes: Any, key: str = "boxes", check: _Checker | None = None) -> list[dict]:
    """Check a list of ROI boxes ({"ijk": ...} or {"ras": ...}); returns them normalised."""
    check = check or _Checker("")
    if not isinstance(boxes, list) or not boxes:
        check.fail(key, f"must be a non-empty list of boxes, not {_describe(boxes)}", BOX_HINT)
    normalised = []
    for number, box in enumerate(boxes):
        where = f"{key}[{number}]"
        if not isinstance(box, dict) or len(box) != 1 or next(iter(box)) not in ("ijk", "ras"):
            check.fail(where, f"must be an object with one key, \"ijk\" or \"ras\", not {_describe(box)}", BOX_HINT)
        system, corners = next(iter(box.items()))
        if (not isinstance(corners, list) or len(corners) != 2
                or any(not isinstance(c, list) or len(c) != 3 for c in corners)):
            check.fail(f"{where}.{system}", "must be two corners of three numbers each", BOX_HINT)
        values = []
        for corner in corners:
            row = []
            for value in corner:
                if system == "ijk":
                    row.append(check.integer(value, f"{where}.ijk", low=None))
                else:
                    row.append(check.number(value, f"{where}.ras"))
            values.append(row)
        normalised.append({system: values})
    return normalised


def _validate_classes(check: _Checker, classes: Any) -> dict[int, dict]:
    classes = check.mapping(classes, "classes")
    result: dict[int, dict] = {}
    for key, spec in classes.items():
        if not re.fullmatch(r"\d+", str(key)) or not 1 <= int(key) <= 255:
            check.fail(f"classes.{key}", "is not a class value", "Class keys are label values from \"1\" to \"255\".")
        where = f"classes.{key}"
        if isinstance(spec, str):
            spec = {"name": spec}
        spec = check.mapping(spec, where)
        check.known_keys(spec, where, ("name", "color"))
        entry: dict[str, Any] = {}
        if "name" in spec:
            entry["name"] = check.string(spec["name"], f"{where}.name", allowed_text="a segment name")
        if "color" in spec:
            color = spec["color"]
            if (not isinstance(color, list) or len(color) != 3
                    or any(isinstance(c, bool) or not isinstance(c, (int, float)) or not 0 <= c <= 1 for c in color)):
                check.fail(f"{where}.color", f"must be [r, g, b] with values from 0 to 1, not {_describe(color)}",
                           "E.g. [1.0, 0.5, 0.0].")
            entry["color"] = [float(c) for c in color]
        result[int(key)] = entry
    return result


def _validate_parameters(check: _Checker, parameters: Any) -> dict:
    parameters = check.mapping(parameters, "parameters")
    check.known_keys(parameters, "parameters", tuple(PARAMETER_DEFAULTS))
    result = dict(PARAMETER_DEFAULTS)
    result["method_options"] = {}
    for key, value in parameters.items():
        name = f"parameters.{key}"
        if key in ("rounds",):
            result[key] = check.integer(value, name, low=1, high=1000, none=True)
        elif key in ("iterations_per_round", "iterations", "batch_size", "threads"):
            result[key] = check.integer(value, name, low=1, none=True)
        elif key == "budget":
            result[key] = check.string(value, name, choices=BUDGETS)
        elif key == "network":
            result[key] = check.string(value, name, choices=NETWORKS)
        elif key == "normalization":
            result[key] = check.string(value, name, choices=NORMALIZATIONS)
        elif key == "learning_rate":
            result[key] = check.number(value, name, positive=True)
        elif key in ("augment", "save_probabilities", "save_uncertainty"):
            result[key] = check.boolean(value, name)
        elif key == "patch_size":
            if value is not None:
                if not isinstance(value, list) or len(value) not in (2, 3):
                    check.fail(name, f"must be a list of 2 (2D) or 3 (3D) sizes or null, not {_describe(value)}",
                               "E.g. [64, 64] for a 2D network; sizes must be multiples of 16 for the default networks.")
                value = [check.integer(v, name, low=1) for v in value]
            result[key] = value
        elif key == "method_options":
            result[key] = dict(check.mapping(value, name))
    return result


def read_job(directory: str | os.PathLike) -> JobSpec:
    """Read and validate ``directory/job.json``."""
    directory = Path(directory)
    path = directory / JOB_FILE
    if not directory.is_dir():
        raise SparseSegError(f"job folder not found: {directory}", "Give the folder that holds job.json.")
    if not path.is_file():
        raise SparseSegError(f"no {JOB_FILE} in {directory}",
                             "Create the job with `sparseseg run --image ... --annotation ... --out DIR` or the client library.")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise SparseSegError(f"{path} is not UTF-8 text", "Write job.json as UTF-8 JSON.") from None
    except json.JSONDecodeError as error:
        raise SparseSegError(f"{path} is not valid JSON (line {error.lineno}, column {error.colno}: {error.msg})",
                             "Fix the JSON syntax (a missing comma or quote, or a trailing comma).") from None
    return validate_job(data, directory, source=str(path))


def make_job(
    method: str,
    image: str | os.PathLike,
    annotation: str | os.PathLike,
    region: dict | None = None,
    reference: str | os.PathLike | None = None,
    classes: dict | None = None,
    parameters: dict | None = None,
    device: str = "auto",
    seed: int = 0,
    case_id: str = "case",
    description: str | None = None,
) -> dict:
    """A ``job.json`` dictionary (not yet validated; :func:`validate_job` checks it)."""
    job: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "method": method,
        "case_id": case_id,
        "inputs": {"image": str(image), "annotation": str(annotation)},
        "region": dict(region or {"kind": "slices", "axis": "auto"}),
        "parameters": dict(parameters or {}),
        "device": device,
        "seed": seed,
    }
    if reference is not None:
        job["inputs"]["reference"] = str(reference)
    if classes:
        job["classes"] = {str(k): v for k, v in classes.items()}
    if description:
        job["description"] = description
    if job["region"].get("kind") == "mask" and job["region"].get("mask") is not None:
        job["region"]["mask"] = str(job["region"]["mask"])
    return job
