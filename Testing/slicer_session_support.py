"""What the Slicer session tests share (test_slicer_session*.py, test_session_translation.py): the annotation's
classes, tiny training settings, a painted annotation node, polling a session until a condition holds, a slice
corrected in the result, the temporary nodes a session must not leave behind, and the three slice views of
Slicer's layout. It needs the slicer-core wheel: import it after ``pytest.importorskip("slicer")``. The ``scene``
fixture (a headless MRML scene) is in conftest.py.
"""

from __future__ import annotations

import time

import numpy as np

from SparseSegLib.session.headless import add_segmentation
from SparseSegLib.session.session import Session, SessionSettings

CLASSES = (("Anterior", (1.0, 0.5, 0.0)), ("Posterior", (0.2, 0.4, 1.0)))


def tiny(**changes) -> SessionSettings:
    settings = dict(method="sparse-only", rounds=2, iterations_per_round=8, batch_size=2, threads=1, device="cpu")
    settings.update(changes)
    return SessionSettings(**settings)


def both_classes_slice(label: np.ndarray) -> int:
    return next(k for k in range(label.shape[0]) if (label[k] == 1).any() and (label[k] == 2).any())


def paint(scene, volume, label: np.ndarray, slices):
    """An annotation node: the reference label on ``slices`` (axis 0), one segment per class."""
    segments = []
    for value, (name, color) in enumerate(CLASSES, start=1):
        mask = np.zeros(label.shape, bool)
        mask[list(slices)] = label[list(slices)] == value
        segments.append((name, color, mask))
    return add_segmentation(scene, volume, segments, "annotation")


def run_until(session: Session, condition, timeout: float = 150.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"session status {session.status}; log tail {session.log[-5:]}")
        session.poll()
        time.sleep(0.05)


def finished(session: Session):
    return lambda: session.status in ("finished", "cancelled", "error") and not session.pending_rounds and not session.job.is_running()


def correct_slice(session: Session, volume, reference: np.ndarray, index: int, axis: int = 0) -> None:
    """What the user does in the Segment Editor: paint the reference over slice ``index`` across ``axis`` (0: the
    axial view of these scans) of the result node."""
    import slicer.util

    current = session.result_label()
    plane: list = [slice(None)] * 3
    plane[axis] = index
    for value in (1, 2):
        mask = current == value
        mask[tuple(plane)] = reference[tuple(plane)] == value
        slicer.util.updateSegmentBinaryLabelmapFromArray(mask.astype(np.uint8), session.result_node,
                                                         f"SparseSeg_{value}", volume)


def temporary_nodes(scene) -> list[str]:
    names = []
    for index in range(scene.GetNumberOfNodes()):
        node = scene.GetNthNode(index)
        if node.IsA("vtkMRMLLabelMapVolumeNode") or (node.GetName() or "").startswith("__"):
            names.append(node.GetName())
    return names


def add_slice_views(scene) -> dict:
    """The three slice views of Slicer's conventional layout (Red axial, Yellow sagittal, Green coronal)."""
    import slicer

    slicer.vtkMRMLSliceNode.AddDefaultSliceOrientationPresets(scene)
    views = {}
    for name, orientation in (("Red", "Axial"), ("Yellow", "Sagittal"), ("Green", "Coronal")):
        node = scene.CreateNodeByClass("vtkMRMLSliceNode")
        node.SetName(name)
        node.SetLayoutName(name)
        node.SetSingletonTag(name)
        views[name] = scene.AddNode(node)
        assert views[name].SetOrientation(orientation)
    return views
