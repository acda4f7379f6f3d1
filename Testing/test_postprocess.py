"""Post-processing (largest component, hole filling) through MONAI gives what the hand-written scipy code gave.

The expected results come from scipy directly (what the module used before hole filling moved to MONAI's
``fill_holes``). They run on a real sample label damaged the way a prediction is (stray blobs, enclosed holes, a hole across the
two classes, a blob touching the object only at a corner, a cavity open to the outside only through an edge),
so a change of connectivity or of per-class handling shows up as a difference.
"""

from __future__ import annotations

import numpy as np
import pytest
from monai.transforms.utils import fill_holes
from scipy import ndimage

from SparseSegLib.engine.postprocess import POSTPROCESSING, filled, postprocess_labels


@pytest.fixture
def damaged(sample_label: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict[str, tuple]]:
    """The sample label with prediction-like faults, random probabilities, and where each fault is."""
    rng = np.random.default_rng(0)
    labels = sample_label.copy()
    foreground = labels > 0
    interior = ndimage.binary_erosion(foreground, iterations=2)
    for k, j, i in np.argwhere(interior)[rng.choice(int(interior.sum()), 20, replace=False)]:
        labels[k, j, i] = 0  # enclosed one-voxel holes
    boundary = (ndimage.binary_dilation(labels == 1) & (labels == 2))
    k, j, i = np.argwhere(boundary & interior)[0]
    labels[k, j, i] = 0  # a hole where the two classes meet
    shape = np.array(labels.shape)
    corner = tuple(int(v) for v in np.argwhere(foreground)[np.argmax(np.argwhere(foreground).sum(1))])  # max k+j+i
    diagonal = tuple(int(c + 1) for c in corner)  # touches the object at a corner only
    assert all(d < s for d, s in zip(diagonal, shape)) and not foreground[diagonal]
    labels[diagonal] = 2
    labels[1:3, 1:3, 1:3] = 1  # a stray blob far from the object
    labels[1, -3, -3] = 2
    # A 3x3x3 shell (one class, inside a zero border) whose centre opens outward only through an edge voxel's
    # neighbour: with face connectivity the centre is enclosed, with full connectivity it is not.
    shell = (slice(-5, -2), slice(1, 4), slice(-5, -2))
    labels[shell] = 1
    labels[-4, 2, -4] = 0  # centre
    labels[-5, 1, -4] = 0  # the centre reaches this one through an edge, and it lies on the shell's surface
    probabilities = rng.random((3,) + labels.shape).astype(np.float32)
    return labels, probabilities, {"diagonal": diagonal, "cavity": (labels.shape[0] - 4, 2, labels.shape[2] - 4)}


@pytest.mark.parametrize("mode", POSTPROCESSING)
def test_postprocessing_repairs_a_real_label_as_scipy_would(damaged, mode):
    """Expected result from scipy directly (its default face connectivity): the largest component, its enclosed
    holes filled (scipy's ``binary_fill_holes``, which MONAI's ``fill_holes`` replaced), each filled voxel taking
    its most probable foreground class, every other voxel unchanged."""
    labels, probabilities, _ = damaged
    foreground = labels > 0
    keep = foreground
    if "lcc" in mode:
        components, _ = ndimage.label(foreground)
        keep = components == np.bincount(components[foreground]).argmax()
    expected = ndimage.binary_fill_holes(keep) if "fill" in mode else keep
    result = postprocess_labels(labels, probabilities, mode)
    assert result.dtype == labels.dtype
    assert np.array_equal(result > 0, expected), f"{int(((result > 0) != expected).sum())} voxels differ"
    assert np.array_equal(result[keep], labels[keep])
    holes = expected & ~keep
    assert np.array_equal(result[holes], probabilities[1:, holes].argmax(0) + 1)
    assert np.all(postprocess_labels(labels, probabilities[:2], mode)[holes] == 1)  # one class: holes take it
    if mode != "none":
        assert (result != labels).sum() >= 20  # the faults were really there to be repaired


def test_face_connectivity_is_what_makes_them_agree(damaged):
    """Why connectivity=1: MONAI's default (full connectivity) would leave the edge-opened cavity unfilled,
    and per-class filling (MONAI's FillHoles on the label map) would not fill the hole where the classes meet."""
    labels, probabilities, where = damaged
    foreground = labels > 0
    assert filled(foreground)[where["cavity"]]
    monai_default = fill_holes(foreground.astype(np.uint8)[None], applied_labels=[1])[0].astype(bool)
    assert not monai_default[where["cavity"]]
    per_class = fill_holes(labels[None].copy())[0]
    assert ((per_class > 0) != filled(foreground)).any()
    lcc = postprocess_labels(labels, probabilities, "lcc")
    assert lcc[where["diagonal"]] == 0  # a corner contact is not a connection
