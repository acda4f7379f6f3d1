"""Installing what the worker needs into Slicer's Python: torch (through the PyTorch extension) and the rest.

The install logic of the module, apart from the session logic as SlicerNNUnet does it. The dependency probe
runs in a background process (``SparseSegLib.session.controller``, never importing torch into Slicer); when it
finds packages missing from Slicer's own Python, the controller calls :meth:`installDependencies`, which asks
the user once and installs torch through the PyTorch extension's public ``installTorch`` (which picks the build
for the NVIDIA driver) and the other requirements with ``slicer.util.pip_install``. Installing is modal (pip and
light-the-torch run to completion, their output in the Python console): the user chose to wait for it.
"""

from __future__ import annotations

import slicer

try:  # Slicer's translation function (slicer.i18n, Slicer >= 5.4), as its own scripted modules import it
    from slicer.i18n import tr as _
except ImportError:  # the slicer-core wheel the tests run on has no slicer.i18n: text stays as written
    def _(text: str) -> str:
        return text


class SparseSegInstallLogic:
    """The user's answer to "install now?" (asked once per Slicer session) and the install itself."""

    def __init__(self) -> None:
        self._installDeclined = False

    def installDependencies(self, requirements) -> None:
        """Install into Slicer's Python; torch through the PyTorch extension so the CUDA build matches the
        driver. Asks once per Slicer session (never in testing mode). The extension's ``installTorch`` imports torch
        into Slicer's Python once installed; SparseSeg itself never uses it there (training runs in the worker)."""
        from SparseSegLib.errors import SparseSegError

        testing = slicer.app.commandOptions().testingEnabled
        if self._installDeclined:
            raise SparseSegError(_("the dependencies are not installed"),
                                 _("Press Start again after installing them, or restart Slicer."))
        if not testing and not slicer.util.confirmOkCancelDisplay(
                _("SparseSeg trains a network in the background and needs these Python packages in Slicer:\n\n"
                  "{requirements}\n\nInstall them now? This can take several minutes (torch is large).").format(
                    requirements="\n".join(requirements))):
            self._installDeclined = True
            raise SparseSegError(_("installation declined"), _("SparseSeg cannot train without torch and MONAI."))
        torchRequirement = next((r for r in requirements if r.startswith("torch")), None)
        if torchRequirement:
            try:
                import PyTorchUtils
            except ModuleNotFoundError:
                raise SparseSegError(_("the PyTorch extension is not installed"),
                                     _("Install 'PyTorch' from the Extensions Manager (it is a dependency of SparseSeg) "
                                       "and restart Slicer.")) from None
            # the extension's public API picks the torch build that matches the NVIDIA driver (light-the-torch);
            # consent was asked above, once (PyTorchUtils/PyTorchUtils.py, fepegar/SlicerPyTorch)
            installed = PyTorchUtils.PyTorchUtilsLogic().installTorch(
                askConfirmation=False, torchVersionRequirement=torchRequirement[len("torch"):] or None)
            if installed is None:
                raise SparseSegError(_("torch was not installed"),
                                     _("See the Python console for the PyTorch extension's output."))
        others = [r for r in requirements if not r.startswith("torch")]
        if others:
            slicer.util.pip_install(others)  # a list: each item one pip argument (Slicer 5.6, 5.8, main)
