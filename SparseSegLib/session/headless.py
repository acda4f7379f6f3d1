"""A real MRML scene without the Slicer application, from PyPI's ``slicer-core`` wheel (tests, benchmarks).

``slicer-core`` ships Slicer's Qt-free core: MRML, the module logics, segmentations, storage nodes. It
has no ``slicer.app``, ``qt``, ``ctk`` or ``ScriptedLoadableModule``, so only the session logic (this
package) runs on it, never the widget. :func:`make_headless_slicer` wires the logics the way the
application does: each logic gets the application logic *before* the scene (the colour logic needs it),
the Segmentations logic exists before any segmentation node (it registers the converter rules), and
``slicer.mrmlScene`` / ``slicer.modules.<name>.logic()`` are set for ``slicer.util`` helpers.
"""

from __future__ import annotations

import types


def make_headless_slicer(quiet: bool = True):
    """``(scene, application logic, {name: module logic})``; sets ``slicer.mrmlScene`` and ``slicer.modules``."""
    import slicer
    import vtk

    if quiet:  # the terminology/colour logics complain about share files the wheel does not ship
        vtk.vtkLogger.SetStderrVerbosity(vtk.vtkLogger.VERBOSITY_OFF)
        vtk.vtkObject.GlobalWarningDisplayOff()
    scene = slicer.vtkMRMLScene()
    app_logic = slicer.vtkSlicerApplicationLogic()
    app_logic.SetMRMLScene(scene)

    def add(name, logic):
        logic.SetMRMLApplicationLogic(app_logic)
        logic.SetMRMLScene(scene)
        app_logic.SetModuleLogic(name, logic)
        return logic

    colors = add("Colors", slicer.vtkSlicerColorLogic())
    app_logic.SetColorLogic(colors)
    logics = {
        "colors": colors,
        "volumes": add("Volumes", slicer.vtkSlicerVolumesLogic()),
        "terminologies": add("Terminologies", slicer.vtkSlicerTerminologiesModuleLogic()),
        "segmentations": add("Segmentations", slicer.vtkSlicerSegmentationsModuleLogic()),
        "subjecthierarchy": add("SubjectHierarchy", slicer.vtkSlicerSubjectHierarchyModuleLogic()),
    }
    markups = getattr(slicer, "vtkSlicerMarkupsLogic", None)
    if markups is not None:
        logics["markups"] = add("Markups", markups())
    slicer.mrmlScene = scene
    # keep the application logic alive: the module logics hold raw pointers to it, and a caller that
    # drops the returned tuple would otherwise leave them dangling (a segfault in the next logic call)
    slicer._sparseseg_headless = (scene, app_logic, logics)
    slicer.modules = types.SimpleNamespace(
        **{name: types.SimpleNamespace(logic=(lambda logic=logic: logic)) for name, logic in logics.items()})
    return scene, app_logic, logics


def add_volume(scene, array, ras_matrix, name: str = "volume"):
    """A scalar volume node holding ``array`` ``(k, j, i)`` placed by the 4x4 ``ras_matrix`` (IJK to RAS)."""
    from . import mrml

    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    mrml.set_volume_from_array(node, array, ras_matrix)
    node.CreateDefaultDisplayNodes()
    return node


def add_segmentation(scene, volume_node, segments, name: str = "annotation"):
    """A segmentation node on ``volume_node``'s grid with segments ``[(name, color, bool mask (k, j, i)), ...]``."""
    import numpy as np
    import slicer.util

    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
    node.CreateDefaultDisplayNodes()
    node.SetReferenceImageGeometryParameterFromVolumeNode(volume_node)
    for segment_name, color, mask in segments:
        segment_id = node.GetSegmentation().AddEmptySegment(segment_name, segment_name, list(color))
        slicer.util.updateSegmentBinaryLabelmapFromArray(np.asarray(mask, dtype=np.uint8), node, segment_id, volume_node)
    _remove_orphan_display_nodes(scene)
    return node


def _remove_orphan_display_nodes(scene) -> None:
    """``slicer.util`` helpers leave the display nodes of their temporary labelmaps behind."""
    for index in reversed(range(scene.GetNumberOfNodes())):
        node = scene.GetNthNode(index)
        if node is not None and node.IsA("vtkMRMLLabelMapVolumeDisplayNode"):
            referenced = False
            for other_index in range(scene.GetNumberOfNodes()):
                other = scene.GetNthNode(other_index)
                if other is not None and other.IsA("vtkMRMLDisplayableNode") and other.GetDisplayNode() is node:
                    referenced = True
                    break
            if not referenced:
                scene.RemoveNode(node)
