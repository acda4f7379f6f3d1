"""The module's logic: parameter node -> settings and nodes; :class:`ModuleController` (SparseSegLib, Qt-free,
tested headless) runs the dependency probe, the session, Save model and Apply model as background processes.

Split from SparseSeg.py the way SlicerNNUnet splits its module (parameters, install logic, session logic,
widget); SparseSeg.py imports it (Slicer puts the module's folder on sys.path) and re-exports it.
"""

from __future__ import annotations

import os
import time

import slicer
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleLogic
from SparseSegInstallLogic import SparseSegInstallLogic
from SparseSegLib.errors import SparseSegError
from SparseSegLib.session import tasks
from SparseSegLib.session.controller import ModuleController
from SparseSegLib.session.session import Session
from SparseSegLib.session.settings import SessionSettings
from SparseSegLib.session.text import set_translator

try:  # Slicer's translation functions (slicer.i18n, Slicer >= 5.4), as its own scripted modules import them
    from slicer.i18n import tr as _
    from slicer.i18n import translate
except ImportError:  # the slicer-core wheel the tests run on has no slicer.i18n: text stays as written
    def _(text: str) -> str:
        return text

    def translate(context: str, text: str) -> str:
        return text

# SparseSegLib.session's shown text (status line, log, errors and hints) is looked up through Slicer's translate
# under each session file's own context (session.session, session.controller, ...), the contexts Slicer's
# lupdate_preprocess gives its _() calls; see SparseSegLib/session/text.py and docs/slicer-api.md.
set_translator(translate)  # once, when Slicer loads the module


class SparseSegLogic(ScriptedLoadableModuleLogic):
    """Slicer glue around :class:`SparseSegLib.session.controller.ModuleController`: parameters -> settings and
    nodes; the controller runs the probe, the session, Save and Apply in the background. Usable without the
    widget (see the test): call :meth:`poll` until :meth:`busy` is False."""

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self.install = SparseSegInstallLogic()
        self.controller = ModuleController(install=self.install.installDependencies)
        self._parameters = None  # the parameter node that started the newest task (gets its results)

    @property
    def session(self):
        return self.controller.session

    def getParameterNode(self):
        from SparseSeg import SparseSegParameterNode  # the module file, loaded by Slicer before its logic is made

        return SparseSegParameterNode(super().getParameterNode())

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

    # -- the session ------------------------------------------------------------------------------------

    def start(self, p, log=None):
        """Start a session: the Session, or None while the worker's Python is probed (:meth:`poll` goes on)."""
        settings = self.settingsFromParameters(p)
        volume, annotation, result = p.inputVolume, p.annotation, p.resultSegmentation
        uncertainty = p.uncertaintyVolume if p.saveUncertainty else None
        rois = list(slicer.util.getNodesByClass("vtkMRMLMarkupsROINode")) if p.regionKind == "boxes" else []
        workDirectory = self.workDirectory(p)

        def makeSession():
            return Session(volume, annotation, settings, workDirectory, result_node=result, roi_nodes=rois,
                           uncertainty_node=uncertainty)

        self._parameters = p
        session = self.controller.start(settings, makeSession, workDirectory, log=log)
        if session is not None:
            p.resultSegmentation = session.result_node
        return session

    def poll(self):
        """One timer tick (:class:`~SparseSegLib.session.controller.Tick`); results go into the parameter node."""
        tick = self.controller.poll()
        p = self._parameters
        if p is not None and tick.started is not None:
            p.resultSegmentation = tick.started.result_node
        if p is not None and tick.saved:
            p.modelDirectory = tick.saved
        return tick

    def busy(self) -> bool:
        return self.controller.busy()

    def stop(self) -> None:
        if self.session is not None:
            self.session.cancel()

    def continueSession(self, p):
        if self.session is None:
            raise SparseSegError(_("nothing to continue"), _("Press Start first."))
        return self.session.continue_session(rounds=p.continueRounds)

    def accept(self) -> None:
        if self.session is not None:
            self.session.accept()

    def goToSuggestedSlice(self):
        """Jump the slice views to the slice the newest round is least sure of: ``(suggestion, view names)``."""
        if self.session is None:
            raise SparseSegError(_("no slice is suggested yet"),
                                 _("Press Start: each round names the slice it is least sure of."))
        return self.session.jump_to_suggested_slice()

    def shutdown(self) -> None:
        self.controller.shutdown()

    # -- models (background processes; :meth:`poll` reports them) ----------------------------------------

    def saveModel(self, folder, p):
        self._parameters = p
        return self.controller.save_model(folder, python=self.settingsFromParameters(p).worker_python())

    def loadModel(self, folder, p) -> dict:
        config = tasks.read_model_config(folder)
        p.modelDirectory = folder
        return config

    def applyModel(self, p):
        """Apply the model folder (or, without one, the session's model, saved first) to ``p.applyVolume``."""
        self._parameters = p
        settings = self.settingsFromParameters(p)
        saveInto = os.path.join(self.workDirectory(p), "models", f"model-{time.strftime('%Y%m%d-%H%M%S')}")
        return self.controller.apply_model(p.modelDirectory.strip(), p.applyVolume, self.workDirectory(p),
                                           python=settings.worker_python(), device=settings.device, save_into=saveInto)
