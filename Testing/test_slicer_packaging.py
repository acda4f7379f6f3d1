"""The Slicer extension's files, checked without Slicer: CMake lists every SparseSegLib file, the .ui has
every widget and parameter the module uses (parsed, and loaded with PySide6's QUiLoader offscreen),
every parameter-node field is bound, the module never imports torch, and the offered methods exist.

``python Testing/test_slicer_packaging.py --write`` rewrites the SparseSegLib list in SparseSeg/CMakeLists.txt.
"""

from __future__ import annotations

import ast
import os
import re
import struct
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODULE = ROOT / "SparseSeg" / "SparseSeg.py"
LOGIC = ROOT / "SparseSeg" / "SparseSegLogic.py"
UI = ROOT / "SparseSeg" / "Resources" / "UI" / "SparseSeg.ui"
MODULE_CMAKE = ROOT / "SparseSeg" / "CMakeLists.txt"
BEGIN, END = "# BEGIN SparseSegLib files", "# END SparseSegLib files"

#: Widget classes parameterNodeWrapper binds for each field type (exact class match, as Slicer's connectors test).
BINDINGS = {
    "bool": {"QCheckBox", "QPushButton"},
    "int": {"QSpinBox", "QSlider", "QComboBox"},
    "float": {"QDoubleSpinBox", "ctkSliderWidget", "QComboBox"},
    "str": {"QLineEdit", "QTextEdit", "QComboBox"},
    "node": {"qMRMLNodeComboBox", "qMRMLSubjectHierarchyTreeView"},
}


def library_files() -> list[str]:
    files = []
    for path in sorted((ROOT / "SparseSegLib").rglob("*.py")):
        relative = path.relative_to(ROOT)
        if "__pycache__" in relative.parts or any(part.startswith(".") for part in relative.parts):
            continue
        files.append(relative.as_posix())
    return files


def listed_files(text: str) -> list[str]:
    block = text.split(BEGIN, 1)[1].split(END, 1)[0]
    return re.findall(r"^\s+(SparseSegLib/\S+)$", block, flags=re.M)


def write_list() -> None:
    text = MODULE_CMAKE.read_text()
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    lines = "\n".join(f"  {name}" for name in library_files())
    MODULE_CMAKE.write_text(f"{head}{BEGIN}\nset(SPARSESEG_LIB_FILES\n{lines}\n  )\n{END}{tail}")


def test_cmake_lists_every_library_file():
    listed = listed_files(MODULE_CMAKE.read_text())
    on_disk = library_files()
    assert listed == sorted(listed), "keep the list sorted"
    missing, stale = sorted(set(on_disk) - set(listed)), sorted(set(listed) - set(on_disk))
    assert not missing and not stale, (
        f"SparseSeg/CMakeLists.txt is out of date: missing {missing}, no longer existing {stale}. "
        "Run `python Testing/test_slicer_packaging.py --write`.")


def test_extension_metadata_and_icon():
    top = (ROOT / "CMakeLists.txt").read_text()
    assert re.search(r"^project\(SparseSeg\)", top, flags=re.M)
    for key in ("HOMEPAGE", "CATEGORY", "CONTRIBUTORS", "DESCRIPTION", "ICONURL", "SCREENSHOTURLS", "DEPENDS"):
        assert re.search(rf'^set\(EXTENSION_{key} "[^"]+"\)', top, flags=re.M), key
    assert re.search(r'^set\(EXTENSION_DEPENDS "PyTorch"\)', top, flags=re.M)
    assert re.search(r'^set\(EXTENSION_CATEGORY "Segmentation"\)', top, flags=re.M)
    assert "add_subdirectory(SparseSeg)" in top
    module = MODULE_CMAKE.read_text()
    assert "slicerMacroBuildScriptedModule(" in module and "slicer_add_python_unittest(SCRIPT ${MODULE_NAME}.py)" in module
    import json

    entry = json.loads((ROOT / "Resources" / "ExtensionsIndex" / "SparseSeg.json").read_text())
    assert entry["category"] == "Segmentation" and entry["scm_url"] and "$schema" in entry
    assert "PyTorch" in entry["build_dependencies"]
    icon = (ROOT / "SparseSeg" / "Resources" / "Icons" / "SparseSeg.png").read_bytes()
    assert icon[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", icon[16:24]) == (128, 128)
    for resource in re.findall(r"^\s+(Resources/\S+)$", module, flags=re.M):
        name = resource.replace("${MODULE_NAME}", "SparseSeg")
        assert (ROOT / "SparseSeg" / name).is_file(), name
    assert "Apache License" in (ROOT / "LICENSE").read_text()[:200]


# --------------------------------------------------------------------------------------------------
# The module's code against its .ui


def module_tree() -> ast.Module:
    return ast.parse(MODULE.read_text())


def parameter_fields() -> dict[str, str]:
    """``{field: "bool" | "int" | "float" | "str" | "node"}`` of the parameterNodeWrapper class."""
    cls = next(n for n in module_tree().body if isinstance(n, ast.ClassDef) and n.name == "SparseSegParameterNode")
    fields = {}
    for item in cls.body:
        if isinstance(item, ast.AnnAssign):
            annotation = item.annotation
            if isinstance(annotation, ast.Subscript):  # Annotated[T, ...]
                annotation = annotation.slice.elts[0]
            name = ast.unparse(annotation)
            fields[item.target.id] = "node" if name.startswith("vtkMRML") else name
    return fields


def ui_names_used() -> set[str]:
    names = set()
    for node in ast.walk(module_tree()):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute) and node.value.attr == "ui"
                and isinstance(node.value.value, ast.Name) and node.value.value.id == "self"):
            names.add(node.attr)
    return names


def ui_widgets() -> dict[str, tuple[str, str | None]]:
    """``{objectName: (class, SlicerParameterName or None)}`` of every widget in the .ui."""
    root = ET.parse(UI).getroot()
    widgets = {}
    for widget in root.iter("widget"):
        parameter = None
        for prop in widget.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                parameter = prop.findtext("string")
        widgets[widget.get("name")] = (widget.get("class"), parameter)
    return widgets


def test_every_widget_the_module_uses_exists_in_the_ui():
    widgets = ui_widgets()
    used = ui_names_used()
    assert used, "the module uses no self.ui widget?"
    assert not sorted(used - set(widgets)), f"used in SparseSeg.py but not in the .ui: {sorted(used - set(widgets))}"


def test_every_parameter_is_bound_to_a_matching_widget():
    fields = parameter_fields()
    bound = {parameter: (name, cls) for name, (cls, parameter) in ui_widgets().items() if parameter}
    assert set(bound) == set(fields), (f"fields without a widget: {sorted(set(fields) - set(bound))}; "
                                       f"SlicerParameterName without a field: {sorted(set(bound) - set(fields))}")
    for field, kind in fields.items():
        name, cls = bound[field]
        assert cls in BINDINGS[kind], f"{field} ({kind}) is bound to {name}, a {cls}: parameterNodeWrapper cannot bind that"
    # choices in the module match the session's, so the GUI never offers what the logic refuses
    source = MODULE.read_text()
    assert "method: Annotated[str, Choice(list(METHOD_CHOICES))] = START_METHOD" in source  # one set of defaults


def widget_methods(cls_name: str) -> set[str]:
    trees = (module_tree(), ast.parse(LOGIC.read_text()))
    cls = next(n for tree in trees for n in tree.body if isinstance(n, ast.ClassDef) and n.name == cls_name)
    return {item.name for item in cls.body if isinstance(item, ast.FunctionDef)}


def test_every_connected_button_is_a_push_button_with_a_handler():
    """``self.ui.<button>.connect("clicked(bool)", self.<handler>)``: the button is a push or tool button in the
    .ui and the handler a method of the widget (the Go to suggested slice button included)."""
    widgets = ui_widgets()
    connected = {}
    for node in ast.walk(module_tree()):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "connect"
                and isinstance(node.func.value, ast.Attribute) and len(node.args) == 2
                and isinstance(node.args[1], ast.Attribute)):
            connected[node.func.value.attr] = (ast.literal_eval(node.args[0]), node.args[1].attr)
    assert connected.get("suggestedSliceButton") == ("clicked(bool)", "onGoToSuggestedSlice")
    methods = widget_methods("SparseSegWidget")
    for name, (signal, handler) in connected.items():
        if signal != "clicked(bool)":
            continue
        assert widgets[name][0] in ("QPushButton", "QToolButton"), f"{name} is a {widgets[name][0]}"
        assert handler in methods, f"{name} is connected to {handler}, which SparseSegWidget lacks"


def test_suggested_slice_button_starts_disabled_and_follows_the_session():
    """The button is off until a round names a slice; the widget enables it from the session's suggestion and the
    logic's handler jumps through the session (the part tested headless in test_slicer_session.py)."""
    from SparseSegLib.session.session import Session

    root = ET.parse(UI).getroot()
    button = next(w for w in root.iter("widget") if w.get("name") == "suggestedSliceButton")
    properties = {p.get("name"): p for p in button.findall("property")}
    assert properties["text"].findtext("string") == "Go to suggested slice"
    assert properties["enabled"].findtext("bool") == "false"
    assert properties["toolTip"].findtext("string")
    source = MODULE.read_text()
    assert "self.ui.suggestedSliceButton.enabled = " in source and "session.suggested_slice()" in source
    assert "goToSuggestedSlice" in widget_methods("SparseSegLogic")
    assert "self.session.jump_to_suggested_slice()" in LOGIC.read_text()
    assert '_("; annotate next: {slice}").format(slice=suggestion.describe())' in source  # the status line names the slice
    assert callable(Session.suggested_slice) and callable(Session.jump_to_suggested_slice)


def test_node_selectors_get_the_scene():
    root = ET.parse(UI).getroot()
    receivers = {c.findtext("receiver") for c in root.iter("connection")
                 if c.findtext("signal") == "mrmlSceneChanged(vtkMRMLScene*)" and c.findtext("slot") == "setMRMLScene(vtkMRMLScene*)"}
    selectors = {name for name, (cls, _) in ui_widgets().items() if cls == "qMRMLNodeComboBox"}
    assert selectors and selectors <= receivers


def test_ui_loads_with_qt_offscreen():
    """The .ui is a valid Qt Designer file: QUiLoader builds it (custom Slicer widgets fall back to their
    base class) and every widget keeps its name and SlicerParameterName."""
    code = f"""
import os, sys
os.environ["QT_QPA_PLATFORM"] = "offscreen"
from PySide6.QtCore import QFile, QtMsgType, qInstallMessageHandler
from PySide6.QtUiTools import QUiLoader
from PySide6.QtWidgets import QApplication, QWidget
qInstallMessageHandler(lambda mode, context, message: None)  # Slicer signals do not exist on the fallback QWidget
app = QApplication([])
file = QFile({str(UI)!r}); file.open(QFile.ReadOnly)
widget = QUiLoader().load(file)
assert widget is not None, "QUiLoader could not build the .ui"
for name, parameter in {dict((n, p) for n, (c, p) in ui_widgets().items())!r}.items():
    child = widget.findChild(QWidget, name) if name != widget.objectName() else widget
    if child is None and name.endswith("Layout"):
        continue
    assert child is not None, name
    if parameter:
        assert child.property("SlicerParameterName") == parameter, name
print("loaded", len(widget.findChildren(QWidget)))
"""
    pytest.importorskip("PySide6.QtUiTools", reason="needs PySide6 (pip install PySide6-Essentials)")
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                               env={**os.environ, "QT_QPA_PLATFORM": "offscreen"})
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert completed.stdout.startswith("loaded")


# --------------------------------------------------------------------------------------------------
# torch stays out of the Slicer process


def test_the_module_never_imports_torch():
    imported = set()
    files = sorted(MODULE.parent.glob("*.py"))
    assert {f.name for f in files} >= {"SparseSeg.py", "SparseSegInstallLogic.py", "SparseSegTest.py"}
    for node in (n for f in files for n in ast.walk(ast.parse(f.read_text()))):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert not imported & {"torch", "monai"}, imported


def test_offered_methods_are_registered():
    from SparseSegLib.methods import METHODS
    from SparseSegLib.session.session import METHOD_CHOICES

    assert set(METHOD_CHOICES) <= set(METHODS), f"not registered: {set(METHOD_CHOICES) - set(METHODS)}"


if __name__ == "__main__":
    if "--write" in sys.argv:
        write_list()
        print(f"rewrote the SparseSegLib list in {MODULE_CMAKE}")


def test_every_module_script_is_installed():
    """Each Python file of the scripted module (SparseSeg.py and the files it imports next to it, which Slicer finds
    because it puts the module's folder on sys.path) is in MODULE_PYTHON_SCRIPTS, so the installed module has it."""
    import re

    block = re.search(r"set\(MODULE_PYTHON_SCRIPTS\n(.*?)\)", MODULE_CMAKE.read_text(), re.S).group(1)
    listed = {line.strip().replace("${MODULE_NAME}", "SparseSeg") for line in block.splitlines() if line.strip()}
    assert listed == {f.name for f in MODULE.parent.glob("*.py")}
    source = MODULE.read_text()
    assert "from SparseSegLogic import SparseSegLogic" in source
    assert "from SparseSegInstallLogic import SparseSegInstallLogic" in LOGIC.read_text()
    assert "from SparseSegTest import SparseSegTest" in source  # Slicer's runTest finds <Module>Test on the module


# --------------------------------------------------------------------------------------------------
# Read against Slicer's source (docs/slicer-api.md, issue 20)


def calls(tree: ast.AST, name: str) -> list[ast.Call]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr == name]


def test_the_parameter_gui_is_connected_with_a_tag_that_disconnects():
    """(a) Slicer 5.6/5.8's ``connectGui`` returns None (parameterNodeWrapper/wrapper.py; fixed in 5.10), so
    ``disconnectGui(None)`` left the old connectors attached and each re-entry's ``QComboBox.clear()`` reset the
    choices. ``connectParametersToGui(mapping)`` returns the tag on every version: the widget must use it."""
    tree = module_tree()
    assert not calls(tree, "connectGui"), "connectGui returns no tag on Slicer 5.6/5.8: use connectParametersToGui"
    connect = calls(tree, "connectParametersToGui")
    assert len(connect) == 1
    assigned = next(n for n in ast.walk(tree) if isinstance(n, ast.Assign) and n.value is connect[0])
    assert ast.unparse(assigned.targets[0]) == "self._parameterNodeGuiTag"
    for call in calls(tree, "disconnectGui"):
        assert ast.unparse(call.args[0]) == "self._parameterNodeGuiTag"


def test_parameter_annotations_are_ones_the_serializer_knows_and_the_learning_rate_steps_finely():
    """(i) Anything in ``Annotated[...]`` that is not a validator or a default is an "Unused annotations" warning
    at every load (wrapper.py ``_processClass``); the spin box's decimals and step belong in the .ui."""
    cls = next(n for n in module_tree().body if isinstance(n, ast.ClassDef) and n.name == "SparseSegParameterNode")
    known = {"Choice", "WithinRange", "Minimum", "Maximum", "Exclude", "Default", "NotNone", "IsInstance", "RangeBounds"}
    for item in cls.body:
        if isinstance(item, ast.AnnAssign) and isinstance(item.annotation, ast.Subscript):
            for extra in item.annotation.slice.elts[1:]:
                assert isinstance(extra, ast.Call) and extra.func.id in known, (item.target.id, ast.unparse(extra))
    spin = next(w for w in ET.parse(UI).getroot().iter("widget") if w.get("name") == "learningRateSpinBox")
    properties = {prop.get("name"): prop for prop in spin.findall("property")}
    assert int(properties["decimals"].findtext("number")) >= 6
    assert 0 < float(properties["singleStep"].findtext("double")) <= 1e-3
    assert float(properties["minimum"].findtext("double")) <= 1e-6


def test_child_processes_start_without_a_console_window():
    """(d) Every child the Slicer process starts (worker, probe, Save, Apply) goes through ``Popen(...,
    **child_process_options())``: on Windows CREATE_NO_WINDOW and a hidden window as ``launchConsoleProcess`` does,
    so no console opens (closing one killed the job); no other ``subprocess`` call runs on the Slicer side."""
    from SparseSegLib.jobs.processes import CREATE_NEW_PROCESS_GROUP, CREATE_NO_WINDOW, child_process_options

    flags = child_process_options(windows=True)["creationflags"]
    assert flags & CREATE_NO_WINDOW and flags & CREATE_NEW_PROCESS_GROUP
    assert child_process_options(windows=False) == {"start_new_session": True}
    files = sorted((ROOT / "SparseSegLib" / "jobs").glob("*.py")) + sorted((ROOT / "SparseSegLib" / "session").glob("*.py"))
    popens = 0
    for path in files:
        if path.name == "benchmark.py":  # a developer's timing script (a sleeping stand-in worker), not the module
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and ast.unparse(node.func).startswith("subprocess."):
                name = ast.unparse(node.func)
                if name == "subprocess.Popen":
                    popens += 1
                    spread = [ast.unparse(k.value) for k in node.keywords if k.arg is None]
                    assert any("child_process_options(" in text or text == "options" for text in spread), path.name
                elif name in ("subprocess.run", "subprocess.call", "subprocess.check_output", "subprocess.check_call"):
                    assert path.name == "processes.py" and "CREATE_NO_WINDOW" in ast.unparse(node), (path.name, name)
    assert popens == 2  # the worker (jobs/client.py) and every other task (session/tasks.py)
    assert "options: dict[str, Any] = child_process_options()" in (ROOT / "SparseSegLib/jobs/client.py").read_text()


def test_the_slicer_side_parses_as_python_3_9():
    """(k) Slicer 5.6 and 5.8 ship Python 3.9.10 (Slicer_REQUIRED_PYTHON_VERSION in their CMakeLists.txt): no
    3.10-only syntax, and ``X | None`` only in annotations of files that postpone them."""
    files = sorted((ROOT / "SparseSeg").glob("*.py")) + sorted(
        p for p in (ROOT / "SparseSegLib").rglob("*.py") if "__pycache__" not in p.parts)
    for path in files:
        source = path.read_text()
        tree = ast.parse(source, str(path), feature_version=(3, 9))
        postponed = "from __future__ import annotations" in source
        annotations = set()
        for node in ast.walk(tree):
            for child in ([node.annotation] if isinstance(node, (ast.AnnAssign, ast.arg)) and node.annotation else []) + \
                    ([node.returns] if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.returns else []):
                annotations |= {id(n) for n in ast.walk(child)}
        for node in ast.walk(tree):
            if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
                sides = [ast.unparse(node.left), ast.unparse(node.right)]
                typelike = any(side == "None" or side in {"int", "float", "str", "bool", "dict", "list", "tuple", "Path"}
                               for side in sides)
                if typelike:
                    assert id(node) in annotations and postponed, f"{path}:{node.lineno}: {ast.unparse(node)}"

