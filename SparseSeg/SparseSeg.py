"""SparseSeg: segment a 3D volume from a sparse annotation (a painted slice or ROI boxes) in 3D Slicer.

The module is deliberately thin and split as SlicerNNUnet splits its module: this file holds the module, its
parameter node and the widget; SparseSegLogic.py the logic, SparseSegInstallLogic.py the dependency install,
SparseSegTest.py the self-test. The GUI is declared in ``Resources/UI/SparseSeg.ui`` and bound to the parameter
node (``parameterNodeWrapper`` + ``SlicerParameterName`` properties). Everything that touches MRML or starts
a process lives in ``SparseSegLib.session`` (tested headless on a real MRML scene with real processes). This
file never imports torch: the worker, the dependency probe and Save / Apply model run in the worker's Python,
as background processes the widget's timer polls.
"""
from __future__ import annotations

import logging
import os
import sys
import traceback
from typing import Annotated

import qt
import slicer
import vtk
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleWidget,
)
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.util import VTKObservationMixin

try:  # Slicer's translation functions (slicer.i18n, Slicer >= 5.4), as its own scripted modules import them
    from slicer.i18n import tr as _
    from slicer.i18n import translate
except ImportError:  # the slicer-core wheel the tests run on has no slicer.i18n: text stays as written
    def _(text: str) -> str:
        return text

    def translate(context: str, text: str) -> str:
        return text

# Developer mode (this repository's SparseSeg/ folder added to the module paths): Slicer puts only this file's
# folder on sys.path, and SparseSegLib/ is one level up (installed, it lies next to this file).
_REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if os.path.isfile(os.path.join(_REPOSITORY, "SparseSegLib", "__init__.py")) and _REPOSITORY not in sys.path:
    sys.path.append(_REPOSITORY)

try:  # guarded: a broken or partial install must still let the module load and say what is wrong
    from SparseSegLib.defaults import START_METHOD
    from SparseSegLib.session.controller import error_text
    from SparseSegLib.session.settings import DEVICE_CHOICES, METHOD_CHOICES, ORIENTATION_CHOICES, REGION_CHOICES
    from SparseSegLogic import SparseSegLogic

    _IMPORT_ERROR = None
except ImportError as error:  # pragma: no cover - only in a broken install
    _IMPORT_ERROR = error

    def error_text(error):
        return str(error)

    class SparseSegLogic(ScriptedLoadableModuleLogic):  # the parameter node only: the widget shows the error
        controller = session = None

        def getParameterNode(self):
            return SparseSegParameterNode(super().getParameterNode())

        def shutdown(self):
            pass

    START_METHOD = "propagate"
    METHOD_CHOICES = ("propagate", "gradual", "self-labelling", "sparse-only", "mean-teacher", "ua-mt", "collaborative")
    REGION_CHOICES = ("slices", "boxes")
    ORIENTATION_CHOICES = ("auto", "axial", "coronal", "sagittal")
    DEVICE_CHOICES = ("auto", "cuda", "cpu")

#: How often the GUI polls the worker (ms). A poll is a few ms; a round import well under 300 ms.
POLL_INTERVAL_MS = 250


#
# SparseSeg
#


class SparseSeg(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("SparseSeg")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        self.parent.dependencies = []
        self.parent.contributors = ["SparseSeg developers"]
        self.parent.helpText = _("""
Segment a 3D volume from a sparse annotation: paint each structure on one slice near its middle, in the view
where it is largest (or inside ROI boxes), press Start, and watch results arrive round by round in the result segmentation. The default method
(propagate) registers the painted slices through the volume (first result in seconds), then fuses small
networks trained on them; Rounds "auto" lets it run until it is done. Correct a few slices with the Segment
Editor, in any slice view, and press Continue: corrected slices become ground truth and both rounds run again.
"Go to suggested slice" shows the slice the latest round is least sure of: the one worth painting next.
Training runs in a background process (GPU when available). See the README's "Use in 3D Slicer" section.
""")
        self.parent.acknowledgementText = _("""
Built on 3D Slicer, MONAI and PyTorch. Methods from 3D Gradual Learning, incremental 2D self-labelling,
Mean Teacher and collaborative-learning papers (see the README).
""")


#
# Parameter node
#


@parameterNodeWrapper
class SparseSegParameterNode:
    """Every choice the user makes in the module (saved with the scene)."""

    inputVolume: vtkMRMLScalarVolumeNode
    annotation: vtkMRMLSegmentationNode
    regionKind: Annotated[str, Choice(list(REGION_CHOICES))] = "slices"
    sliceOrientation: Annotated[str, Choice(list(ORIENTATION_CHOICES))] = "auto"
    method: Annotated[str, Choice(list(METHOD_CHOICES))] = START_METHOD  # SparseSegLib.defaults: Start = `sparseseg run`
    rounds: Annotated[int, WithinRange(0, 100)] = 0  # 0 = auto: the method runs until it is done
    continueRounds: Annotated[int, WithinRange(0, 100)] = 0
    network: Annotated[str, Choice(["2d", "3d"])] = "2d"
    budget: Annotated[str, Choice(["quick", "paper"])] = "quick"
    iterationsPerRound: Annotated[int, WithinRange(0, 1000000)] = 0
    batchSize: Annotated[int, WithinRange(0, 1024)] = 0
    learningRate: Annotated[float, WithinRange(1e-6, 1.0)] = 0.001  # decimals and step: set in the .ui
    augment: bool = False
    seed: Annotated[int, WithinRange(0, 2147483647)] = 0
    device: Annotated[str, Choice(list(DEVICE_CHOICES))] = "auto"
    pythonExecutable: str = ""
    workDirectory: str = ""
    saveUncertainty: bool = False
    resultSegmentation: vtkMRMLSegmentationNode
    uncertaintyVolume: vtkMRMLScalarVolumeNode
    applyVolume: vtkMRMLScalarVolumeNode
    modelDirectory: str = ""


#
# SparseSegWidget
#


class SparseSegWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._logLines = 0

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        self.uiWidget = slicer.util.loadUI(self.resourcePath("UI/SparseSeg.ui"))
        self.layout.addWidget(self.uiWidget)
        self.ui = slicer.util.childWidgetVariables(self.uiWidget)
        self.uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = SparseSegLogic()

        self.timer = qt.QTimer()
        self.timer.setInterval(POLL_INTERVAL_MS)
        self.timer.connect("timeout()", self.onTimer)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self.ui.startButton.connect("clicked(bool)", self.onStart)
        self.ui.stopButton.connect("clicked(bool)", self.onStop)
        self.ui.continueButton.connect("clicked(bool)", self.onContinue)
        self.ui.acceptButton.connect("clicked(bool)", self.onAccept)
        self.ui.suggestedSliceButton.connect("clicked(bool)", self.onGoToSuggestedSlice)
        self.ui.applyModelButton.connect("clicked(bool)", self.onApplyModel)
        self.ui.saveModelButton.connect("clicked(bool)", self.onSaveModel)
        self.ui.loadModelButton.connect("clicked(bool)", self.onLoadModel)
        self.ui.browsePythonButton.connect("clicked(bool)", self.onBrowsePython)

        if _IMPORT_ERROR is not None:
            self.ui.statusLabel.text = _("SparseSegLib could not be imported: {error}").format(error=_IMPORT_ERROR)
        self.initializeParameterNode()
        self.updateButtons()

    def cleanup(self) -> None:
        self.timer.stop()
        if self.logic is not None:
            self.logic.shutdown()
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        self._disconnectParameterNode()

    def onSceneStartClose(self, caller, event) -> None:
        self.timer.stop()
        if self.logic is not None:
            self.logic.shutdown()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            first = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if first:
                self._parameterNode.inputVolume = first

    def setParameterNode(self, inputParameterNode) -> None:
        self._disconnectParameterNode()
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            # connectParametersToGui returns the tag on every Slicer version; connectGui returns None before 5.10
            # (Base/Python/slicer/parameterNodeWrapper/wrapper.py), and disconnectGui(None) disconnects nothing
            self._parameterNodeGuiTag = self._parameterNode.connectParametersToGui(self.parameterWidgets())
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateButtons)
        self.updateButtons()

    def _disconnectParameterNode(self) -> None:
        if self._parameterNode and self._parameterNodeGuiTag is not None:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
        self._parameterNodeGuiTag = None
        if self._parameterNode:
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateButtons)

    def parameterWidgets(self) -> dict:
        """``{parameter name: widget}`` from the .ui's SlicerParameterName properties (what connectGui collects)."""
        return {widget.property("SlicerParameterName"): widget for widget in self.uiWidget.findChildren(qt.QWidget)
                if widget.property("SlicerParameterName")}

    # -- state shown in the GUI ---------------------------------------------------------------------

    def updateButtons(self, caller=None, event=None) -> None:
        p = self._parameterNode
        controller = self.logic.controller if self.logic else None
        session = controller.session if controller else None
        running = bool(session and session.running) or bool(controller and controller.checking)
        ready = bool(p and p.inputVolume and p.annotation and _IMPORT_ERROR is None)
        modelBusy = bool(controller and (controller.save_task or controller.apply_task or controller.apply_after_save))
        self.ui.startButton.enabled = ready and not running
        self.ui.stopButton.enabled = bool(session and session.running)
        self.ui.continueButton.enabled = bool(session and session.can_continue)
        self.ui.acceptButton.enabled = bool(session and session.imported_rounds and session.status != "accepted")
        self.ui.suggestedSliceButton.enabled = bool(session and session.status != "accepted" and session.suggested_slice())
        self.ui.saveModelButton.enabled = bool(session and session.imported_rounds and not session.running and not modelBusy)
        self.ui.applyModelButton.enabled = bool(p and p.applyVolume and not modelBusy
                                                and (p.modelDirectory or (session and session.imported_rounds)))
        self.ui.startButton.toolTip = (_("Train on the annotation and stream rounds into the result segmentation") if ready
                                       else _("Select the input volume and the annotation segmentation"))

    def showProgress(self) -> None:
        if self.logic.controller and self.logic.controller.checking:
            self.ui.statusLabel.text = _("checking the worker's Python packages (first Start only) ...")
        session = self.logic.session
        if session is None:
            return
        fraction, text = session.progress()
        self.ui.progressBar.value = int(round(100 * fraction))
        suggestion = session.suggested_slice() if session.status != "accepted" else None
        if suggestion is not None:
            text += _("; annotate next: {slice}").format(slice=suggestion.describe())
        self.ui.statusLabel.text = text if not session.error_message else session.error_message
        for line in session.log[self._logLines:]:
            self.ui.logTextEdit.appendPlainText(line)
        self._logLines = len(session.log)

    def showError(self, message, error) -> None:
        """A message box with what went wrong and what to do (a SparseSegError's hint); details: the traceback.
        In testing mode Slicer's errorDisplay only logs."""
        details = "".join(traceback.format_exception(type(error), error, error.__traceback__))
        logging.error(f"{message}\n{details}")
        text = f"{message}\n\n{error_text(error)}"
        self.ui.statusLabel.text = " ".join(text.split())
        slicer.util.errorDisplay(text, detailedText=details)

    # -- actions --------------------------------------------------------------------------------------

    def _run(self, message, function):
        try:
            with slicer.util.WaitCursor():
                function()
        except Exception as error:  # a button's failure: shown with its hint, never raised into Qt
            self.showError(message, error)
        self.showProgress()
        self.updateButtons()

    def onStart(self) -> None:
        def start():
            self._logLines = 0
            self.ui.logTextEdit.clear()
            self.logic.start(self._parameterNode, log=self.ui.logTextEdit.appendPlainText)
            self.timer.start()  # polls the probe (first Start) or the worker
        self._run(_("Failed to start SparseSeg."), start)

    def onStop(self) -> None:
        self._run(_("Failed to stop the worker."), self.logic.stop)

    def onContinue(self) -> None:
        def resume():
            self.logic.continueSession(self._parameterNode)
            self.timer.start()
        self._run(_("Failed to continue."), resume)

    def onAccept(self) -> None:
        self._run(_("Failed to accept the result."), self.logic.accept)

    def onGoToSuggestedSlice(self) -> None:
        # the session centres every slice view on the suggested slice (vtkMRMLSliceNode.JumpAllSlices with
        # CenteredJumpSlice, checked in Slicer/Slicer Libs/MRML/Core/vtkMRMLSliceNode.cxx); the log names the
        # view that shows it, or says that none has that orientation
        self._run(_("Failed to go to the suggested slice."), self.logic.goToSuggestedSlice)

    def onTimer(self) -> None:
        tick = self.logic.poll()  # never raises: failures come back in tick.errors, each once
        if tick.saved:
            self.ui.logTextEdit.appendPlainText(_("model saved to {folder}").format(folder=tick.saved))
        if tick.applied is not None:
            self.ui.logTextEdit.appendPlainText(_("model applied: {node}").format(node=tick.applied.GetName()))
        self.showProgress()
        self.updateButtons()
        if not self.logic.busy():
            self.timer.stop()
        for what, error in tick.errors:
            self.showError(POLL_FAILURES.get(what, _("SparseSeg failed.")), error)

    def onSaveModel(self) -> None:
        folder = qt.QFileDialog.getExistingDirectory(slicer.util.mainWindow(), _("Save the model into folder"))
        if folder:
            def save():
                self.logic.saveModel(folder, self._parameterNode)
                self.timer.start()
            self._run(_("Failed to save the model."), save)

    def onLoadModel(self) -> None:
        folder = qt.QFileDialog.getExistingDirectory(slicer.util.mainWindow(), _("Model folder (config.json + model.pt)"))
        if folder:
            self._run(_("Not a SparseSeg model folder."), lambda: self.logic.loadModel(folder, self._parameterNode))

    def onApplyModel(self) -> None:
        def apply():
            self.logic.applyModel(self._parameterNode)
            self.timer.start()
        self._run(_("Failed to apply the model."), apply)

    def onBrowsePython(self) -> None:
        path = qt.QFileDialog.getOpenFileName(slicer.util.mainWindow(), _("Python executable for the worker"))
        if path:
            self._parameterNode.pythonExecutable = path


#: The message box title line for a failure the timer reports (ModuleController.poll's Tick.errors).
POLL_FAILURES = {"start": _("Failed to start SparseSeg."), "session": _("Failed to read the worker's results."),
                 "save": _("Failed to save the model."), "apply": _("Failed to apply the model.")}


#
# SparseSegLogic (SparseSegLogic.py, imported above) and SparseSegTest (SparseSegTest.py; Slicer's runTest looks
# the class up on this module)
#

from SparseSegTest import SparseSegTest  # noqa: E402,F401
