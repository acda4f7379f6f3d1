"""SparseSeg: segment a 3D volume from a sparse annotation (a painted slice or ROI boxes) in 3D Slicer.

The module is deliberately thin. The GUI is declared in ``Resources/UI/SparseSeg.ui`` and bound to a
parameter node (``parameterNodeWrapper`` + ``SlicerParameterName`` properties), so there is no
hand-written GUI <-> parameter sync code. Everything that touches MRML lives in
``SparseSegLib.session`` (tested headless on a real MRML scene); training runs in a separate worker
process (``python -m SparseSegLib.worker``). This file never imports torch: the worker, the
dependency probe and "Save model" / "Apply model" run in the worker's Python.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
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
from slicer.parameterNodeWrapper import Choice, Decimals, WithinRange, parameterNodeWrapper
from slicer.util import VTKObservationMixin
from SparseSegInstallLogic import SparseSegInstallLogic

try:  # guarded: a broken or partial install must still let the module load and say what is wrong
    from SparseSegLib.defaults import START_METHOD
    from SparseSegLib.errors import SparseSegError
    from SparseSegLib.session.session import (
        DEVICE_CHOICES,
        METHOD_CHOICES,
        ORIENTATION_CHOICES,
        REGION_CHOICES,
        Session,
        SessionSettings,
    )
    from SparseSegLib.session import tasks

    _IMPORT_ERROR = None
except ImportError as error:  # pragma: no cover - only in a broken install
    _IMPORT_ERROR = error
    SparseSegError = RuntimeError
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
        self.parent.title = "SparseSeg"
        self.parent.categories = ["Segmentation"]
        self.parent.dependencies = []
        self.parent.contributors = ["SparseSeg developers"]
        self.parent.helpText = """
Segment a 3D volume from a sparse annotation: paint each structure on one slice (or inside ROI boxes),
press Start, and watch results arrive round by round in the result segmentation. The default method
(propagate) registers the painted slices through the volume (first result in seconds), then fuses small
networks trained on them; Rounds "auto" lets it run until it is done. Correct a few slices with the Segment
Editor and press Continue: corrected slices become ground truth and both rounds run again.
"Go to suggested slice" shows the slice the latest round is least sure of: the one worth painting next.
Training runs in a background process (GPU when available). See the README's "Use in 3D Slicer" section.
"""
        self.parent.acknowledgementText = """
Built on 3D Slicer, MONAI and PyTorch. Methods from 3D Gradual Learning, incremental 2D self-labelling,
Mean Teacher and collaborative-learning papers (see the README).
"""


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
    learningRate: Annotated[float, WithinRange(1e-6, 1.0), Decimals(6)] = 0.001
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
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/SparseSeg.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
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
            self.ui.statusLabel.text = f"SparseSegLib could not be imported: {_IMPORT_ERROR}"
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
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateButtons)

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
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateButtons)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateButtons)
        self.updateButtons()

    # -- state shown in the GUI ---------------------------------------------------------------------

    def updateButtons(self, caller=None, event=None) -> None:
        p = self._parameterNode
        session = self.logic.session if self.logic else None
        running = bool(session and session.running)
        ready = bool(p and p.inputVolume and p.annotation and _IMPORT_ERROR is None)
        self.ui.startButton.enabled = ready and not running
        self.ui.stopButton.enabled = running
        self.ui.continueButton.enabled = bool(session and session.can_continue)
        self.ui.acceptButton.enabled = bool(session and session.imported_rounds and session.status != "accepted")
        self.ui.suggestedSliceButton.enabled = bool(session and session.status != "accepted" and session.suggested_slice())
        self.ui.saveModelButton.enabled = bool(session and session.imported_rounds and not running)
        self.ui.applyModelButton.enabled = bool(p and p.applyVolume and (p.modelDirectory or (session and session.imported_rounds)))
        self.ui.startButton.toolTip = ("Train on the annotation and stream rounds into the result segmentation" if ready
                                       else "Select the input volume and the annotation segmentation")

    def showProgress(self) -> None:
        session = self.logic.session
        if session is None:
            return
        fraction, text = session.progress()
        self.ui.progressBar.value = int(round(100 * fraction))
        suggestion = session.suggested_slice() if session.status != "accepted" else None
        if suggestion is not None:
            text += f"; annotate next: {suggestion.describe()}"
        self.ui.statusLabel.text = text if not session.error_message else session.error_message
        for line in session.log[self._logLines:]:
            self.ui.logTextEdit.appendPlainText(line)
        self._logLines = len(session.log)

    # -- actions --------------------------------------------------------------------------------------

    def _run(self, message, function):
        with slicer.util.tryWithErrorDisplay(message, waitCursor=True):
            function()
        self.showProgress()
        self.updateButtons()

    def onStart(self) -> None:
        def start():
            self._logLines = 0
            self.ui.logTextEdit.clear()
            session = self.logic.start(self._parameterNode, log=self.ui.logTextEdit.appendPlainText)
            self._parameterNode.resultSegmentation = session.result_node
            self.timer.start()
        self._run("Failed to start SparseSeg.", start)

    def onStop(self) -> None:
        self._run("Failed to stop the worker.", self.logic.stop)

    def onContinue(self) -> None:
        def resume():
            self.logic.continueSession(self._parameterNode)
            self.timer.start()
        self._run("Failed to continue.", resume)

    def onAccept(self) -> None:
        self._run("Failed to accept the result.", self.logic.accept)

    def onGoToSuggestedSlice(self) -> None:
        # the session centres every slice view on the suggested slice (vtkMRMLSliceNode.JumpAllSlices with
        # CenteredJumpSlice, checked in Slicer/Slicer Libs/MRML/Core/vtkMRMLSliceNode.cxx); the log names the
        # view that shows it, or says that none has that orientation
        self._run("Failed to go to the suggested slice.", self.logic.goToSuggestedSlice)

    def onTimer(self) -> None:
        try:
            self.logic.poll()
            result = self.logic.pollApply()
            if result is not None:
                self.ui.statusLabel.text = f"model applied: {result.GetName()}"
        except Exception as error:  # keep the GUI alive; show what went wrong
            logging.exception("SparseSeg poll failed")
            self.ui.statusLabel.text = f"error: {error}"
            self.timer.stop()
        self.showProgress()
        self.updateButtons()
        if not self.logic.busy():
            self.timer.stop()

    def onSaveModel(self) -> None:
        folder = qt.QFileDialog.getExistingDirectory(slicer.util.mainWindow(), "Save the model into folder")
        if folder:
            self._run("Failed to save the model.", lambda: self._saveModel(folder))

    def _saveModel(self, folder) -> None:
        self.logic.saveModel(folder, self._parameterNode)
        self._parameterNode.modelDirectory = folder
        self.ui.statusLabel.text = f"model saved to {folder}"

    def onLoadModel(self) -> None:
        folder = qt.QFileDialog.getExistingDirectory(slicer.util.mainWindow(), "Model folder (config.json + model.pt)")
        if folder:
            self._run("Not a SparseSeg model folder.", lambda: self.logic.loadModel(folder, self._parameterNode))

    def onApplyModel(self) -> None:
        def apply():
            self.logic.applyModel(self._parameterNode)
            self.timer.start()
        self._run("Failed to apply the model.", apply)

    def onBrowsePython(self) -> None:
        path = qt.QFileDialog.getOpenFileName(slicer.util.mainWindow(), "Python executable for the worker")
        if path:
            self._parameterNode.pythonExecutable = path


#
# SparseSegLogic
#


class SparseSegLogic(ScriptedLoadableModuleLogic):
    """Slicer glue around :class:`SparseSegLib.session.Session`: parameters -> settings, dependency check
    and installation (asked once), model save/load/apply. Usable without the widget (see the test)."""

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self.session = None
        self.applyTask = None
        self.install = SparseSegInstallLogic()

    def getParameterNode(self):
        return SparseSegParameterNode(super().getParameterNode())

    # -- settings -------------------------------------------------------------------------------------

    @staticmethod
    def settingsFromParameters(p) -> "SessionSettings":
        return SessionSettings(
            method=p.method, rounds=p.rounds or None, continue_rounds=p.continueRounds or None,
            iterations_per_round=p.iterationsPerRound or None, network=p.network, budget=p.budget,
            learning_rate=p.learningRate, batch_size=p.batchSize or None, augment=p.augment,
            save_uncertainty=p.saveUncertainty, device=p.device, seed=p.seed, region=p.regionKind,
            orientation=p.sliceOrientation, python=p.pythonExecutable.strip() or None)

    @staticmethod
    def workDirectory(p) -> str:
        return p.workDirectory.strip() or os.path.join(slicer.app.temporaryPath, "SparseSeg")

    # -- dependencies ---------------------------------------------------------------------------------

    def ensureDependencies(self, settings, log=None) -> dict:
        """The worker's Python checked (and, for Slicer's own, completed) by :class:`SparseSegInstallLogic`."""
        return self.install.ensureDependencies(settings, log=log)

    # -- the session ------------------------------------------------------------------------------------

    def start(self, p, log=None):
        if self.session is not None and self.session.running:
            raise SparseSegError("a session is already running", "Stop it first.")
        settings = self.settingsFromParameters(p)
        self.ensureDependencies(settings, log=log)
        rois = list(slicer.util.getNodesByClass("vtkMRMLMarkupsROINode")) if p.regionKind == "boxes" else []
        session = Session(p.inputVolume, p.annotation, settings, self.workDirectory(p),
                          result_node=p.resultSegmentation, roi_nodes=rois,
                          uncertainty_node=p.uncertaintyVolume if p.saveUncertainty else None)
        if self.session is not None:
            self.session.close(block=False)
        self.session = session
        session.start()
        return session

    def poll(self):
        if self.session is None:
            return []
        return self.session.poll()

    def busy(self) -> bool:
        return bool((self.session and self.session.running) or self.applyTask is not None)

    def stop(self) -> None:
        if self.session is not None:
            self.session.cancel()

    def continueSession(self, p):
        if self.session is None:
            raise SparseSegError("nothing to continue", "Press Start first.")
        return self.session.continue_session(rounds=p.continueRounds)

    def accept(self) -> None:
        if self.session is not None:
            self.session.accept()

    def goToSuggestedSlice(self):
        """Jump the slice views to the slice the newest round is least sure of: ``(suggestion, view names)``."""
        if self.session is None:
            raise SparseSegError("no slice is suggested yet", "Press Start: each round names the slice it is least sure of.")
        return self.session.jump_to_suggested_slice()

    def shutdown(self) -> None:
        if self.session is not None:
            self.session.close(block=False)
        if self.applyTask is not None:
            self.applyTask.cancel()
            self.applyTask = None

    # -- models -----------------------------------------------------------------------------------------

    def saveModel(self, folder, p, timeout=600.0) -> str:
        if self.session is None or self.session.job is None:
            raise SparseSegError("no trained model yet", "Run Start first.")
        task = tasks.save_model(self.session.job.directory, folder, python=self.settingsFromParameters(p).worker_python())
        with slicer.util.WaitCursor() if hasattr(slicer.util, "WaitCursor") else contextlib.nullcontext():
            deadline = time.monotonic() + timeout
            while task.poll() is None:
                slicer.app.processEvents()
                time.sleep(0.05)
                if time.monotonic() > deadline:
                    task.cancel()
                    raise SparseSegError("saving the model timed out", f"See {task.log}.")
        if task.poll() != 0:
            raise SparseSegError(f"saving the model failed: {task.failure()}", f"See {task.log}.")
        return folder

    def loadModel(self, folder, p) -> dict:
        config = tasks.read_model_config(folder)
        p.modelDirectory = folder
        return config

    def applyModel(self, p):
        if not p.applyVolume:
            raise SparseSegError("no volume to apply the model to", "Select a volume under 'Apply model to volume'.")
        folder = p.modelDirectory.strip()
        if not folder:
            folder = os.path.join(self.workDirectory(p), "models", f"model-{time.strftime('%Y%m%d-%H%M%S')}")
            self.saveModel(folder, p)
            p.modelDirectory = folder
        settings = self.settingsFromParameters(p)
        self.applyTask = tasks.ApplyModelTask(folder, p.applyVolume, self.workDirectory(p),
                                              python=settings.worker_python(), device=settings.device)
        return self.applyTask

    def pollApply(self):
        if self.applyTask is None:
            return None
        result = self.applyTask.poll()
        if result is not None:
            self.applyTask = None
        return result


#
# SparseSegTest (SparseSegTest.py; Slicer's runTest looks the class up on this module)
#

from SparseSegTest import SparseSegTest  # noqa: E402,F401
