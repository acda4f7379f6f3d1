"""The screenshot's module panel: ``SparseSeg/Resources/UI/SparseSeg.ui`` loaded by PySide6's QUiLoader offscreen.

Loading the real .ui (rather than drawing a likeness) keeps the picture honest as the panel changes. Slicer's custom
widgets are unknown to plain Qt, so stand-ins are registered under their names: ``ctkCollapsibleButton`` (a
button-like header with an arrow above its contents, collapsed when the .ui says so), ``qMRMLNodeComboBox`` (a combo
box showing the selected node's name) and ``qMRMLWidget`` (a plain widget). Every other widget, text, tooltip and
layout is the .ui's own. The panel is filled with the state the module shows while a job streams (made by
``screenshot_job``); Slicer's own "Help & Acknowledgement" section (added by the module panel) is drawn collapsed
on top.

PySide6 and SparseSegLib are imported inside the functions: ``make_screenshot.py`` sets Qt's platform and
``sys.path`` first.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
UI = ROOT / "SparseSeg" / "Resources" / "UI" / "SparseSeg.ui"


def stand_in_classes() -> tuple[type, type, type]:
    """Qt classes under the names of Slicer's custom widgets, defined on call because PySide6 loads lazily."""
    from PySide6.QtCore import Property, QPoint, QRect, QSize, Qt
    from PySide6.QtGui import QPainter
    from PySide6.QtWidgets import QComboBox, QPushButton, QStyle, QStyleOptionButton, QWidget

    class ctkCollapsibleButton(QPushButton):  # noqa: N801 - the .ui's class name
        """CTK's collapsible section as it looks: a button-like header (arrow, title) above its contents."""

        HEADER = 26

        def __init__(self, parent=None):
            super().__init__(parent)
            self._collapsed = False
            self.setContentsMargins(0, self.HEADER, 0, 0)
            self.setCheckable(False)
            self.setFocusPolicy(Qt.NoFocus)

        def _get_collapsed(self):
            return self._collapsed

        def _set_collapsed(self, value):
            self._collapsed = bool(value)

        collapsed = Property(bool, _get_collapsed, _set_collapsed)

        def apply_collapsed(self):
            if self._collapsed:
                for child in self.findChildren(QWidget):
                    child.hide()
                self.setFixedHeight(self.HEADER + 2)

        def sizeHint(self):  # noqa: N802 - Qt's name
            layout = self.layout()
            hint = layout.totalSizeHint() if layout is not None and not self._collapsed else QSize(200, self.HEADER + 2)
            return QSize(max(hint.width(), 200), hint.height())

        def minimumSizeHint(self):  # noqa: N802
            layout = self.layout()
            hint = layout.totalMinimumSize() if layout is not None and not self._collapsed else QSize(100, self.HEADER + 2)
            return hint

        def paintEvent(self, event):  # noqa: N802
            painter = QPainter(self)
            option = QStyleOptionButton()
            option.initFrom(self)
            option.rect = QRect(0, 0, self.width(), self.HEADER)
            option.state |= QStyle.State_Raised
            self.style().drawPrimitive(QStyle.PE_PanelButtonCommand, option, painter, self)
            arrow = QStyleOptionButton()
            arrow.initFrom(self)
            arrow.rect = QRect(6, (self.HEADER - 12) // 2, 12, 12)
            primitive = QStyle.PE_IndicatorArrowRight if self._collapsed else QStyle.PE_IndicatorArrowDown
            self.style().drawPrimitive(primitive, arrow, painter, self)
            painter.setPen(self.palette().buttonText().color())
            painter.drawText(QRect(24, 0, self.width() - 30, self.HEADER), Qt.AlignVCenter | Qt.AlignLeft, self.text())
            if not self._collapsed:
                painter.setPen(self.palette().mid().color())
                painter.drawRect(QRect(QPoint(0, self.HEADER), QPoint(self.width() - 1, self.height() - 1)))

    class qMRMLNodeComboBox(QComboBox):  # noqa: N801
        """A node selector showing its node's name ("None" when empty)."""

    class qMRMLWidget(QWidget):  # noqa: N801
        pass

    return ctkCollapsibleButton, qMRMLNodeComboBox, qMRMLWidget


def load_ui(stand_ins: tuple[type, ...]):
    """The module's .ui as QUiLoader builds it; stops with the loader's message if it cannot."""
    from PySide6.QtCore import QFile
    from PySide6.QtUiTools import QUiLoader

    loader = QUiLoader()
    for cls in stand_ins:
        loader.registerCustomWidget(cls)
    file = QFile(str(UI))
    file.open(QFile.ReadOnly)
    ui = loader.load(file)
    file.close()
    if ui is None:
        raise SystemExit(f"QUiLoader could not build {UI}: {loader.errorString()}")
    return ui


def fill_ui(ui, state: dict, names: dict[str, str | None], method: str) -> None:
    """Put the streaming job's state into the .ui's widgets as the module would: choices as the parameter node's
    connectors fill them, buttons as ``SparseSegWidget.updateButtons`` enables them, progress, status and log."""
    from PySide6.QtWidgets import QWidget

    from SparseSegLib.session.settings import DEVICE_CHOICES, METHOD_CHOICES, ORIENTATION_CHOICES, REGION_CHOICES

    def child(name):
        found = ui.findChild(QWidget, name)
        if found is None:
            raise SystemExit(f"{UI} has no widget {name}")
        return found

    # Choice fields, filled as parameterNodeWrapper's QComboBox connector fills them
    choices = {"regionComboBox": (REGION_CHOICES, "slices"), "orientationComboBox": (ORIENTATION_CHOICES, "auto"),
               "methodComboBox": (METHOD_CHOICES, method), "networkComboBox": (("2d", "3d"), "2d"),
               "budgetComboBox": (("quick", "paper"), "quick"), "deviceComboBox": (DEVICE_CHOICES, "auto")}
    for name, (values, current) in choices.items():
        box = child(name)
        box.clear()
        box.addItems(list(values))
        box.setCurrentText(current)
    for name, node in names.items():  # node selectors
        box = child(name)
        box.addItem(node or "None")
    # Buttons as SparseSegWidget.updateButtons sets them while a worker streams rounds (or after it finished)
    running = state["running"]
    enabled = {"startButton": not running, "stopButton": running, "continueButton": not running,
               "acceptButton": True, "suggestedSliceButton": "annotate next" in state["text"],
               "saveModelButton": not running, "loadModelButton": True, "applyModelButton": False}
    for name, on in enabled.items():
        child(name).setEnabled(on)
    child("progressBar").setValue(int(round(100 * state["fraction"])))
    status = child("statusLabel")
    status.setText(state["text"])
    status.setWordWrap(True)
    log = child("logTextEdit")
    for line in state["log"]:
        log.appendPlainText(line)
    log.setFixedHeight(150)


def build_panel(state: dict, names: dict[str, str | None], method: str, width: int):
    """The module panel as Slicer lays it out: its collapsed "Help & Acknowledgement" above the module's widget."""
    from PySide6.QtWidgets import QVBoxLayout, QWidget

    collapsible, node_combo, mrml_widget = stand_in_classes()
    ui = load_ui((collapsible, node_combo, mrml_widget))
    fill_ui(ui, state, names, method)

    panel = QWidget()
    layout = QVBoxLayout(panel)
    layout.setContentsMargins(6, 6, 6, 6)
    help_section = collapsible()
    help_section.setText("Help & Acknowledgement")
    help_section.collapsed = True
    layout.addWidget(help_section)
    layout.addWidget(ui)
    for section in [help_section] + ui.findChildren(collapsible):
        section.apply_collapsed()
    panel.setFixedWidth(width)
    return panel
