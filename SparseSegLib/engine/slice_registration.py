"""Propagating a label from one slice to the next by deformable 2D registration (SimpleITK demons).

Neighbouring slices of a scan show the same anatomy, slightly moved and reshaped: registering slice
``s - 1`` onto slice ``s`` and warping its label gives a shape prior for ``s`` that follows the motion
(identity copying does not: a structure that drifts in-plane, like the hippocampal tail across axial
slices, is lost within a few slices). Used by self-labelling's ``continuity`` option.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk


def slice_transform(fixed: np.ndarray, moving: np.ndarray, iterations: int = 50, smoothing: float = 1.5) -> sitk.Transform:
    """The transform mapping points of 2D slice ``fixed`` into ``moving`` (symmetric-forces demons).

    Both are intensity-normalised slices of one scan, so a mean-squares metric (demons) fits; the
    displacement field is smoothed with a Gaussian of ``smoothing`` pixels after every iteration.
    """
    demons = sitk.FastSymmetricForcesDemonsRegistrationFilter()
    demons.SetNumberOfIterations(int(iterations))
    demons.SetStandardDeviations(float(smoothing))
    field = demons.Execute(sitk.GetImageFromArray(np.ascontiguousarray(fixed, dtype=np.float32)),
                           sitk.GetImageFromArray(np.ascontiguousarray(moving, dtype=np.float32)))
    return sitk.DisplacementFieldTransform(sitk.Cast(field, sitk.sitkVectorFloat64))


def warp_label(label: np.ndarray, transform: sitk.Transform) -> np.ndarray:
    """``label`` (2D, ints; negative = unknown) resampled through ``transform`` (nearest neighbour, unknown outside)."""
    moving = sitk.GetImageFromArray(np.ascontiguousarray(label, dtype=np.int16))
    warped = sitk.Resample(moving, moving, transform, sitk.sitkNearestNeighbor, -1, sitk.sitkInt16)
    return sitk.GetArrayFromImage(warped)
