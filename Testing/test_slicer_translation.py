"""Text the Slicer module shows goes through Slicer's translation function (issue 20, point 5).

Slicer's scripted modules import ``from slicer.i18n import tr as _`` and wrap each literal the user sees in
``_("...")`` (``Modules/Scripted/*/*.py``, ``Utilities/Templates/Modules/Scripted/TemplateKey.py``; see
docs/slicer-api.md). Qt's lupdate collects only literal arguments, and ``tr`` looks the text up before any
value is put in, so placeholders are filled afterwards with ``.format``. The widget cannot be imported
here (no ``qt`` on slicer-core), so its file is read; the install logic is run with a marking ``tr``.
"""

from __future__ import annotations

import ast
import importlib
import re
import sys
import types
from pathlib import Path

import pytest

from SparseSegLib.errors import SparseSegError

MODULE_DIR = Path(__file__).resolve().parents[1] / "SparseSeg"
FILES = ("SparseSeg.py", "SparseSegLogic.py", "SparseSegInstallLogic.py")

#: Widget properties the user reads, assigned from Python.
SHOWN_ATTRIBUTES = {"text", "toolTip", "title", "helpText", "acknowledgementText", "categories", "windowTitle",
                    "placeholderText", "statusTip"}
#: Calls whose text arguments the user reads (dialogs, the log box, error messages and their hints).
SHOWN_CALLS = {"_run", "showError", "errorDisplay", "warningDisplay", "infoDisplay", "confirmOkCancelDisplay",
               "confirmYesNoDisplay", "appendPlainText", "setText", "setToolTip", "getExistingDirectory",
               "getOpenFileName", "getSaveFileName", "SparseSegError"}
TRANSLATORS = {"_", "translate"}


def _called(node: ast.AST) -> str | None:
    if isinstance(node, ast.Call):
        return node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", None)
    return None


def untranslated(source: str) -> list[str]:
    """Literal text (anything with a letter) reaching a shown property or call outside ``_()`` / ``translate()``,
    and ``_()`` calls that lupdate or ``tr`` cannot handle (not one literal, or placeholders never filled)."""
    tree = ast.parse(source)
    parents = {child: parent for parent in ast.walk(tree) for child in ast.iter_child_nodes(parent)}
    shown: list[ast.AST] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Attribute) and t.attr in SHOWN_ATTRIBUTES
                                                for t in node.targets):
            shown.append(node.value)
        elif isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "POLL_FAILURES" for t in node.targets):
            shown.extend(node.value.values)
        elif _called(node) in SHOWN_CALLS:
            shown.extend(node.args)
    problems = []
    for root in shown:
        for node in ast.walk(root):
            if isinstance(node, ast.JoinedStr) or (isinstance(node, ast.Constant) and isinstance(node.value, str)
                                                   and re.search(r"[A-Za-z]", node.value)
                                                   and not isinstance(parents.get(node), ast.JoinedStr)):
                ancestor, wrapped = node, False
                while ancestor in parents and not wrapped:
                    ancestor = parents[ancestor]
                    wrapped = _called(ancestor) in TRANSLATORS
                if not wrapped:
                    problems.append(f"line {node.lineno}: {ast.unparse(node)[:70]}")
    for node in ast.walk(tree):
        if _called(node) == "_":
            text = node.args[0] if len(node.args) == 1 else None
            if not (isinstance(text, ast.Constant) and isinstance(text.value, str)):
                problems.append(f"line {node.lineno}: _() of {ast.unparse(node)[:70]} (lupdate needs one literal)")
                continue
            wanted = set(re.findall(r"(?<!\{)\{([^{}]+)\}(?!\})", text.value))
            parent = parents.get(node)
            call = parents.get(parent) if isinstance(parent, ast.Attribute) and parent.attr == "format" else None
            given = {k.arg for k in call.keywords} if call is not None else set()
            if wanted != given:
                problems.append(f"line {node.lineno}: placeholders {sorted(wanted)} filled with {sorted(given)}")
    return problems


def test_the_checker_finds_untranslated_text():
    """The check itself can fail: each way of showing a bare or unformattable string is caught."""
    bad = '''
self.ui.statusLabel.text = "checking ..."
self.ui.button.toolTip = ("a" if ready else _("b"))
self._run(f"Failed {x}.", start)
raise SparseSegError("nothing to continue", _("Press Start first."))
POLL_FAILURES = {"start": "Failed to start."}
log.appendPlainText(_(f"saved to {folder}"))
log.appendPlainText(_("saved to {folder}"))
'''
    assert len(untranslated(bad)) == 7, untranslated(bad)
    good = '''
self.ui.statusLabel.text = _("checking ...")
self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
log.appendPlainText(_("saved to {folder}").format(folder=folder))
slicer.util.confirmOkCancelDisplay(_("Install {r}?").format(r="\\n".join(names)))
self.ui.statusLabel.text = " ".join(text.split())
'''
    assert untranslated(good) == []


@pytest.mark.parametrize("name", FILES)
def test_every_shown_string_of_the_module_is_translatable(name):
    source = (MODULE_DIR / name).read_text()
    assert untranslated(source) == []
    assert "from slicer.i18n import tr as _" in source
    assert "except ImportError:" in source.split("from slicer.i18n import tr as _", 1)[1].split("\n\n", 1)[0]


def _install_logic(monkeypatch, marking: bool):
    """SparseSegInstallLogic imported afresh (with a marking ``slicer.i18n`` when ``marking``), with a Slicer
    that is not in testing mode and whose confirmation dialog records its text and answers Cancel."""
    import slicer

    if marking:
        i18n = types.ModuleType("slicer.i18n")
        i18n.tr = lambda text: f"<<{text}>>"
        monkeypatch.setitem(sys.modules, "slicer.i18n", i18n)
    else:
        assert importlib.util.find_spec("slicer.i18n") is None  # slicer-core: the module's fallback is used
    options = types.SimpleNamespace(testingEnabled=False)
    monkeypatch.setattr(slicer, "app", types.SimpleNamespace(commandOptions=lambda: options), raising=False)
    shown: list[str] = []
    monkeypatch.setattr(slicer.util, "confirmOkCancelDisplay", lambda text, *a, **k: shown.append(text) and False,
                        raising=False)
    monkeypatch.syspath_prepend(str(MODULE_DIR))
    monkeypatch.delitem(sys.modules, "SparseSegInstallLogic", raising=False)
    module = importlib.import_module("SparseSegInstallLogic")
    monkeypatch.delitem(sys.modules, "SparseSegInstallLogic")
    return module.SparseSegInstallLogic(), shown


def test_the_install_dialog_and_its_errors_go_through_tr(monkeypatch):
    logic, shown = _install_logic(monkeypatch, marking=True)
    with pytest.raises(SparseSegError) as declined:
        logic.installDependencies(["torch>=2.1", "monai>=1.3"])
    assert len(shown) == 1 and shown[0].startswith("<<SparseSeg trains a network")
    assert "torch>=2.1\nmonai>=1.3" in shown[0]  # the list is put in after the lookup
    assert declined.value.message == "<<installation declined>>"
    assert declined.value.hint == "<<SparseSeg cannot train without torch and MONAI.>>"
    with pytest.raises(SparseSegError) as again:
        logic.installDependencies(["monai>=1.3"])
    assert again.value.message.startswith("<<") and again.value.hint.startswith("<<")


def test_without_slicer_i18n_the_text_stays_as_written(monkeypatch):
    logic, shown = _install_logic(monkeypatch, marking=False)
    with pytest.raises(SparseSegError, match="^installation declined$"):
        logic.installDependencies(["monai>=1.3"])
    assert shown[0].startswith("SparseSeg trains a network") and "\nmonai>=1.3\n" in shown[0]
