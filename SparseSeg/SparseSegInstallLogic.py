"""Installing what the worker needs into Slicer's Python: torch (through the PyTorch extension) and the rest.

The install logic of the module, apart from the session logic as SlicerNNUnet does it: it probes the
worker's Python in a child process (never importing torch into Slicer), asks the user once, and installs
torch through the PyTorch extension's public ``installTorch`` (which picks the build for the NVIDIA driver)
and the other requirements with ``slicer.util.pip_install``.
"""

from __future__ import annotations

import slicer


class SparseSegInstallLogic:
    """Probe results per worker Python and the user's answer to "install now?" (asked once per Slicer session)."""

    def __init__(self) -> None:
        self._environments = {}  # probed worker Pythons: executable -> report
        self._installDeclined = False

    def ensureDependencies(self, settings, log=None) -> dict:
        """Probe the worker's Python once; if torch/MONAI are missing from Slicer's own Python, ask once
        and install them (PyTorch extension for torch, pip for the rest). Returns the probe report."""
        from SparseSegLib.errors import SparseSegError
        from SparseSegLib.session import tasks

        python = settings.worker_python()
        report = self._environments.get(python)
        if report is None or report.get("missing"):
            report = tasks.probe_environment(python)
        missing = tasks.missing_requirements(report)
        if missing:
            ownPython = not settings.python
            if not ownPython:
                raise SparseSegError(f"the worker Python {python} lacks {', '.join(missing)}",
                                     f"Install them into that environment (e.g. `{python} -m pip install {' '.join(missing)}`) "
                                     "or leave the Python executable empty to use Slicer's own.")
            self.installDependencies(missing)
            report = tasks.probe_environment(python)
            if report.get("missing"):
                raise SparseSegError(f"installing {', '.join(report['missing'])} did not succeed",
                                     "Restart Slicer and try again; see the Python console for pip's output.")
        self._environments[python] = report
        if log:
            log(tasks.describe_environment(report, settings.device))
        if settings.device == "cuda" and not report.get("cuda_available"):
            raise SparseSegError("device CUDA was chosen but torch sees no CUDA GPU "
                                 f"(torch CUDA build: {report.get('cuda_build') or 'none, CPU-only torch'})",
                                 "Choose device auto or CPU, or install a CUDA build of torch that matches the driver.")
        return report

    def installDependencies(self, requirements) -> None:
        """Install into Slicer's Python; torch through the PyTorch extension so the CUDA build matches the
        driver. Asks once per Slicer session (never in testing mode). The extension's ``installTorch`` imports torch
        into Slicer's Python once installed; SparseSeg itself never uses it there (training runs in the worker)."""
        from SparseSegLib.errors import SparseSegError

        testing = slicer.app.commandOptions().testingEnabled
        if self._installDeclined:
            raise SparseSegError("the dependencies are not installed", "Press Start again after installing them, or restart Slicer.")
        if not testing and not slicer.util.confirmOkCancelDisplay(
                "SparseSeg trains a network in the background and needs these Python packages in Slicer:\n\n"
                + "\n".join(requirements) + "\n\nInstall them now? This can take several minutes (torch is large)."):
            self._installDeclined = True
            raise SparseSegError("installation declined", "SparseSeg cannot train without torch and MONAI.")
        torchRequirement = next((r for r in requirements if r.startswith("torch")), None)
        if torchRequirement:
            try:
                import PyTorchUtils
            except ModuleNotFoundError:
                raise SparseSegError("the PyTorch extension is not installed",
                                     "Install 'PyTorch' from the Extensions Manager (it is a dependency of SparseSeg) "
                                     "and restart Slicer.") from None
            # the extension's public API picks the torch build that matches the NVIDIA driver (light-the-torch);
            # consent was asked above, once (PyTorchUtils/PyTorchUtils.py, fepegar/SlicerPyTorch)
            installed = PyTorchUtils.PyTorchUtilsLogic().installTorch(
                askConfirmation=False, torchVersionRequirement=torchRequirement[len("torch"):] or None)
            if installed is None:
                raise SparseSegError("torch was not installed", "See the Python console for the PyTorch extension's output.")
        others = [r for r in requirements if not r.startswith("torch")]
        if others:
            slicer.util.pip_install(" ".join(f'"{r}"' for r in others))
