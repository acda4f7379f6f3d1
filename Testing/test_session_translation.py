"""The session's shown text goes through the translation hook (SparseSegLib/session/text.py).

The Slicer module installs Slicer's translation with ``set_translator`` (context ``SparseSeg``); here a
recording, marking translator stands in for it. A real session on the bundled scan (slicer-core MRML, a
stand-in worker process whose events and rounds the test writes, as the session benchmark does) produces its
errors, hints, status line and log lines; each carries the mark, the translator is only ever asked for
literal templates of the session's source (what lupdate collects), values are put in after the lookup, and
without a translator every text is what it was before the hook. A source check finds shown literals outside
``tr()`` and ``tr()`` calls lupdate or ``.format`` cannot handle.
"""

from __future__ import annotations

import ast
import os
import re
from pathlib import Path

import numpy as np
import pytest

from SparseSegLib.errors import SparseSegError
from SparseSegLib.session.text import context_of, set_translator, tr

SESSION_DIR = Path(__file__).resolve().parents[1] / "SparseSegLib" / "session"
#: Calls whose text arguments the user reads: errors (message, hint) and log lines.
SHOWN_CALLS = {"SparseSegError", "_say", "log"}
#: Functions whose returned text (and ``text`` they build) the module shows.
SHOWN_FUNCTIONS = {"progress", "progress_line", "describe", "describe_jump", "describe_environment", "failure", "plane_name"}
PLACEHOLDER = r"(?<!\{)\{([^{}]+)\}(?!\})"
#: The name the session files call the hook by (``from .text import tr as _``): what Slicer's tooling extracts.
HOOK = "_"


def _called(node: ast.AST) -> str | None:
    if isinstance(node, ast.Call):
        return node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", None)
    return None


def _format_call(node: ast.AST, parents: dict) -> ast.Call | None:
    """The ``.format(...)`` call applied to ``node`` (through ``a if c else b`` choices), if any."""
    while isinstance(parents.get(node), ast.IfExp) and node is not parents[node].test:
        node = parents[node]
    parent = parents.get(node)
    if isinstance(parent, ast.Attribute) and parent.attr == "format" and isinstance(parents.get(parent), ast.Call):
        return parents[parent]
    return None


def untranslated(source: str) -> list[str]:
    """Shown literals outside ``tr()``, and ``tr()`` calls that are not one literal or whose placeholders are not
    all filled by keyword in a ``.format`` after the call. Values given to ``.format`` and literals compared in
    code are not text to translate."""
    tree = ast.parse(source)
    parents = {child: parent for parent in ast.walk(tree) for child in ast.iter_child_nodes(parent)}
    problems = []
    for node in ast.walk(tree):
        if _called(node) != HOOK:
            continue
        text = node.args[0] if len(node.args) == 1 and not node.keywords else None
        if not (isinstance(text, ast.Constant) and isinstance(text.value, str)):
            problems.append(f"line {node.lineno}: tr() of {ast.unparse(node)[:70]} (lupdate needs one literal)")
            continue
        call = _format_call(node, parents)
        given = {k.arg for k in call.keywords} if call is not None else set()
        wanted = set(re.findall(PLACEHOLDER, text.value))
        if None in given or (call is not None and call.args) or not wanted <= given:
            problems.append(f"line {node.lineno}: placeholders {sorted(wanted)} filled with {sorted(map(str, given))}")
    roots: list[ast.AST] = []
    for node in ast.walk(tree):
        if _called(node) in SHOWN_CALLS:
            roots.extend(node.args)
        elif isinstance(node, ast.FunctionDef) and node.name in SHOWN_FUNCTIONS:
            for inner in ast.walk(node):
                if isinstance(inner, ast.Return) and inner.value is not None:
                    roots.append(inner.value)
                elif isinstance(inner, (ast.Assign, ast.AugAssign)) and any(
                        isinstance(t, ast.Name) and t.id == "text"
                        for t in (inner.targets if isinstance(inner, ast.Assign) else [inner.target])):
                    roots.append(inner.value)
    for root in roots:
        for node in ast.walk(root):
            shown = isinstance(node, ast.JoinedStr) or (
                isinstance(node, ast.Constant) and isinstance(node.value, str) and re.search(r"[A-Za-z]", node.value)
                and not isinstance(parents.get(node), ast.JoinedStr))
            ancestor, exempt = node, False
            while shown and not exempt and ancestor is not root:
                ancestor = parents[ancestor]
                exempt = (_called(ancestor) == HOOK or isinstance(ancestor, ast.Compare)
                          or (isinstance(ancestor, ast.keyword) and _called(parents.get(ancestor)) == "format"
                              and isinstance(parents[ancestor].func, ast.Attribute)
                              and any(_called(n) == HOOK for n in ast.walk(parents[ancestor].func.value))))
            if shown and not exempt:
                problems.append(f"line {node.lineno}: {ast.unparse(node)[:70]}")
    return problems


def session_templates() -> set[str]:
    """Every ``tr("...")`` literal of SparseSegLib/session: what an extraction tool collects."""
    found = set()
    for path in SESSION_DIR.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if _called(node) == HOOK and node.args and isinstance(node.args[0], ast.Constant):
                found.add(node.args[0].value)
    return found


def preprocessed_templates() -> set[tuple[str, str]]:
    """(context, literal) pairs as Slicer's ``Utilities/Scripts/lupdate_preprocess.py`` makes them for lupdate: its
    patterns rewrite ``_("...")`` (and the other quote forms) into ``translate("<context>", "...")``, the context
    being the package folder + ``.`` + the file stem."""
    patterns = [r'_\((\s*?".+?"\s*?)\)', r"_\((\s*?'.+?'\s*?)\)", r'_\((\s*?""".+?"""\s*?)\)', r"_\((\s*?'''.+?'''\s*?)\)"]
    found = set()
    for path in SESSION_DIR.glob("*.py"):
        source = path.read_text()
        for pattern in patterns:
            for literal in re.findall(pattern, source, flags=re.DOTALL):
                found.add((f"session.{path.stem}", ast.literal_eval("(" + literal.strip() + ")")))
    return found


def test_slicer_tooling_extracts_every_template_under_the_context_it_is_looked_up_in():
    extracted = preprocessed_templates()
    assert {text for _, text in extracted} == session_templates()
    assert len(extracted) >= 100
    assert context_of(str(SESSION_DIR / "session.py")) == "session.session"


def test_the_checker_finds_untranslated_text():
    """The check itself can fail: each way of showing a bare or unformattable string is caught."""
    bad = '''
raise SparseSegError("nothing to continue", _("Press Start first."))
self._say(f"worker started for {folder}")
pending.log(_(f"checking {python}"))
raise SparseSegError(_("round {index} is late").format(round=index), _("See {log}."))
def progress(self):
    return 0.0, "not started"
def describe_environment(report):
    text = _("worker Python {python}").format(python=python)
    text += "; device: CPU (chosen)"
'''
    assert len(untranslated(bad)) == 7, untranslated(bad)
    good = '''
raise SparseSegError(_("method {method} is not offered").format(method=repr(method)), _("Choose one."))
self._say((_("continue: {count} slice(s): {slices}") if slices else _("continue: {count} slice(s)")).format(
    count=len(slices), slices=", ".join(slices)))
pending.log(_("Install (e.g. `{command}`)").format(command=f"{python} -m pip install x"))
def progress(self):
    if self.status == "finished":
        return 1.0, _("finished: {done} round(s)").format(done=done)
'''
    assert untranslated(good) == []


@pytest.mark.parametrize("path", sorted(SESSION_DIR.glob("*.py")), ids=lambda path: path.name)
def test_every_shown_string_of_the_session_is_translatable(path):
    assert untranslated(path.read_text()) == []


def test_tr_is_the_identity_until_a_translator_is_installed():
    assert tr("result accepted") == "result accepted"
    set_translator(lambda context, text: f"«{context}:{text}»")
    try:  # looked up under this file's context, as slicer.i18n.getContext makes it (Testing has no __init__.py)
        assert tr("result accepted") == "«test_session_translation:result accepted»"
    finally:
        set_translator(None)
    assert tr("result accepted") == "result accepted"


# -- a real session, with a recording and marking translator and without one ---------------------------------

def _error(function) -> SparseSegError:
    with pytest.raises(SparseSegError) as caught:
        function()
    return caught.value


def shown_texts(sample_case, tmp_path: Path) -> dict[str, str]:
    """The texts a user reads along one session: its errors and hints, the status line at each step and the log.

    The worker is a stand-in (a sleeping process started through the session's own start code) for whose job the
    test writes what a real worker writes: events, a round with its suggested slice, a checkpoint."""
    from slicer_session_support import add_slice_views, both_classes_slice, correct_slice, paint, tiny

    from SparseSegLib.io import write_image
    from SparseSegLib.jobs import layout
    from SparseSegLib.jobs.atomic import atomic_write_json
    from SparseSegLib.jobs.events import EventWriter
    from SparseSegLib.session import mrml, tasks
    from SparseSegLib.session.controller import ModuleController
    from SparseSegLib.session.headless import add_volume, make_headless_slicer
    from SparseSegLib.session.session import Session

    scene, _, _ = make_headless_slicer()
    tmp_path.mkdir(parents=True, exist_ok=True)
    stand_in = tmp_path / "python"
    stand_in.write_text("#!/bin/sh\nexec sleep 120\n")
    stand_in.chmod(0o755)
    texts: dict[str, str] = {}

    def keep(name: str, error: SparseSegError) -> None:
        texts[f"{name}.message"], texts[f"{name}.hint"] = error.message, error.hint

    keep("no volume", _error(lambda: Session(None, None)))
    volume = add_volume(scene, sample_case.image, sample_case.geometry.ijk_to_ras(), "hippocampus")
    k = both_classes_slice(sample_case.label)
    annotation = paint(scene, volume, sample_case.label, [k])
    keep("method", _error(Session(volume, annotation, tiny(method="nope"), tmp_path).start))
    keep("no annotation", _error(Session(volume, None, tiny(), tmp_path).start))
    keep("orientation", _error(lambda: mrml.array_axis_for_orientation(volume, "oblique")))
    keep("model folder", _error(lambda: tasks.read_model_config(tmp_path / "no-model")))
    keep("no model", _error(lambda: ModuleController().save_model(tmp_path / "model")))
    texts["environment"] = tasks.describe_environment(
        {"python": "/usr/bin/python3", "version": "3.12.1", "packages": {"torch": "2.8.0", "numpy": "2.0"},
         "missing": ["monai"], "gpus": [{"name": "H200", "memory_gb": 139.8, "free_gb": 120.5}]})
    probe_log: list[str] = []
    controller = ModuleController()
    settings = tiny(python=str(stand_in))
    assert controller.start(settings, lambda: None, tmp_path, probe_log.append) is None  # the probe runs
    controller.shutdown()
    texts["probe log"] = probe_log[0]

    session = Session(volume, annotation, tiny(rounds=2, python=str(stand_in)), tmp_path / "session")
    texts["progress, not started"] = session.progress()[1]
    keep("continue first", _error(session.continue_session))
    keep("no suggestion", _error(session.jump_to_suggested_slice))
    jobs = []
    try:
        jobs.append(session.start())
        job = jobs[0]
        texts["progress, starting"] = session.progress()[1]
        suggested = next(s for s in range(sample_case.label.shape[0]) if s != k and (sample_case.label[s] > 0).any())
        label = sample_case.label.astype(np.uint8)
        label[suggested] = 0  # the round misses that slice; the user paints it back (a corrected slice)
        with EventWriter(job.directory / layout.EVENTS_FILE) as events:
            events.emit("started", pid=job.pid, method="sparse-only", rounds=2, resume_from=0, device="cpu")
            events.emit("progress", round=1, rounds=2, step=3, total=10, loss=0.5, eta_s=65.0)
            session.poll()
            texts["progress, round"] = session.progress()[1]
            folder = layout.round_dir(job.directory, 1)
            write_image(label, session.geometry, folder / layout.LABEL_FILE)
            atomic_write_json(folder / layout.ROUND_FILE, {"round": 1, "rounds": 2, "files": {"label": "rounds/001/label.nrrd"},
                                                           "suggested_slice": {"axis": 0, "index": suggested}})
            layout.checkpoint_path(job.directory, 1).parent.mkdir(parents=True, exist_ok=True)
            layout.checkpoint_path(job.directory, 1).write_bytes(b"stand-in checkpoint")
            events.emit("round", round=1, rounds=2, files={"label": "rounds/001/label.nrrd"})
            session.poll()
            assert session.imported_rounds == [1]
            texts["suggestion"] = session.suggested_slice().describe()
            session.jump_to_suggested_slice()  # no slice view in the scene yet
            add_slice_views(scene)
            session.jump_to_suggested_slice()
            session.cancel(grace_s=30.0)
            events.emit("cancelled", reason="CANCEL file", round=1)
        job.kill()
        session.poll()
        texts["progress, cancelled"] = session.progress()[1]
        correct_slice(session, volume, sample_case.label, suggested)
        jobs.append(session.continue_session(rounds=1))
        session.accept()
        texts["progress, accepted"] = session.progress()[1]
    finally:
        for job in jobs:
            job.kill()
        scene.Clear(1)
    texts.update({f"log {number}": line for number, line in enumerate(session.log)
                  if not line.startswith(("started `", "round 1/2", "cancelled ("))})  # the worker's own lines
    return {name: text.replace(str(session.root), "<session>").replace(str(tmp_path), "<tmp>")
            for name, text in texts.items()}


def _unmarked(text: str) -> str:
    return text.replace("«", "").replace("»", "")


@pytest.mark.mrml
@pytest.mark.skipif(os.name == "nt", reason="the stand-in worker is a shell script")
def test_a_sessions_shown_text_is_looked_up_as_templates_and_filled_afterwards(sample_case, tmp_path):
    pytest.importorskip("slicer", reason="needs the slicer-core wheel (pip install slicer-core)")
    asked: list[str] = []
    contexts: set[tuple[str, str]] = set()
    set_translator(lambda context, text: contexts.add((context, text)) or asked.append(text) or "«" + text + "»")
    try:
        marked = shown_texts(sample_case, tmp_path / "marked")
    finally:
        set_translator(None)
    plain = shown_texts(sample_case, tmp_path / "plain")

    assert len(marked) >= 30 and set(marked) == set(plain), sorted(set(marked) ^ set(plain))
    for name, text in marked.items():  # every shown text went through the translator, as whole templates
        assert text.startswith("«") and text.endswith("»"), (name, text)
    assert set(asked) <= session_templates(), sorted(set(asked) - session_templates())  # only literal templates
    assert not [text for text in asked if "nope" in text or str(tmp_path) in text or "H200" in text]
    # each lookup's (context, template) is one that Slicer's lupdate_preprocess extracts from the source
    assert contexts <= preprocessed_templates(), sorted(contexts - preprocessed_templates())
    assert {context for context, _ in contexts} >= {"session.session", "session.controller", "session.mrml"}
    # placeholders are filled after the lookup: the mark wraps the template, the values sit inside it
    assert marked["method.message"] == "«method 'nope' is not offered in Slicer»"
    assert marked["progress, round"] == "«round 1/2, step 3/10, ETA 1:05 for this round»"
    assert marked["suggestion"].startswith("««axial» slice ") and marked["suggestion"].endswith(")»")
    assert marked["environment"].startswith("«worker Python /usr/bin/python3 (3.12.1): torch 2.8.0, numpy 2.0»«; missing: monai»")
    assert "«, 120.5 GB free»" in marked["environment"]
    logs = [text for name, text in marked.items() if name.startswith("log ")]
    assert any(line.startswith("«worker started for <session>") and line.endswith(" with <tmp>/python»") for line in logs)
    assert any(line.startswith("«annotate next: ««axial» slice") and line.endswith(", shown in the Red view»") for line in logs)
    assert any("no slice view shows «axial» slices (set one to «axial»)»" in line for line in logs)
    assert any(line.startswith("«continue: corrected slices become ground truth, «1 along axis 0 (k): ") for line in logs)
    # without a translator every text is as it was written before the hook
    for name, text in marked.items():
        assert plain[name] == _unmarked(text), name
    assert plain["progress, not started"] == "not started"
    assert plain["progress, cancelled"] == "cancelled: 1 of 2 round(s) imported"
    assert plain["progress, accepted"].startswith("accepted: 1 of ")
    assert plain["no volume.message"] == "no input volume selected"
    assert plain["probe log"] == "checking the packages of the worker Python <tmp>/python (in the background)"
    assert "result accepted" in plain.values() and "stop requested: the worker ends at its next training step" in plain.values()
