"""The Slicer side never imports torch: every module under ``SparseSegLib/session`` (and the jobs client it uses)
imported in a clean interpreter leaves ``torch`` (and ``monai``) out of ``sys.modules``.

Slicer's own Python may have no torch at all, and importing it there would take seconds on every module entry;
this guards the design rule (../shared/docs/design.md) that the heavy work lives in the worker process.
"""

from __future__ import annotations

import pkgutil
import subprocess
import sys
from pathlib import Path

import SparseSegLib.session as session_package

ROOT = Path(__file__).resolve().parents[1]


def session_modules() -> list[str]:
    return sorted(f"SparseSegLib.session.{m.name}" for m in pkgutil.iter_modules(session_package.__path__))


def test_no_session_module_imports_torch():
    modules = session_modules() + ["SparseSegLib.jobs.client", "SparseSegLib.jobs.continuation"]
    assert "SparseSegLib.session.session" in modules and "SparseSegLib.session.tasks" in modules
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except ImportError as error:\n"
        "        if 'slicer' not in str(error) and 'vtk' not in str(error):\n"
        "            raise\n"
        "heavy = sorted(m for m in ('torch', 'monai') if m in sys.modules)\n"
        "print(','.join(heavy))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "", f"imported by the Slicer side: {result.stdout.strip()}"

