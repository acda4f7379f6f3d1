"""The module's self-test: the whole loop in real Slicer (``slicer_add_python_unittest`` runs it through
SparseSeg.py, which re-exports the class for Slicer's "Reload and Test")."""

from __future__ import annotations

import time

import slicer
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleTest


class SparseSegTest(ScriptedLoadableModuleTest):
    """The whole loop in real Slicer on a small synthetic volume: annotate one slice, Start, >= 2 rounds
    streamed into the result, correct a slice, Continue, Save model, Apply model to a second volume.

    Needs torch and MONAI in Slicer's Python (installed by the module on first Start; in testing mode the
    install runs without asking). Run from Slicer's ctest (``slicer_add_python_unittest``) or the
    Python console: ``slicer.util.selectModule('SparseSeg'); slicer.modules.SparseSegWidget.onReload()``.
    """

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_SparseSeg_loop()

    def _pollUntil(self, logic, condition, timeout=300.0):
        """What the widget's timer does: poll the logic (probe, worker, Save, Apply) until ``condition()``;
        a failure a tick reports is raised here. Returns the node the last Apply produced, if any."""
        deadline = time.monotonic() + timeout
        applied = None
        while True:
            tick = logic.poll()
            applied = tick.applied if tick.applied is not None else applied
            if tick.errors:
                raise tick.errors[0][1]
            if condition():
                return applied
            if time.monotonic() > deadline:
                raise AssertionError("timed out waiting for the worker")
            slicer.app.processEvents()
            time.sleep(0.05)

    def _syntheticVolume(self, name, seed):
        import numpy as np

        rng = np.random.default_rng(seed)
        k, j, i = np.mgrid[0:24, 0:40, 0:40]
        ball = ((i - 20) ** 2 + (j - 20) ** 2 + ((k - 12) * 1.5) ** 2) < 12 ** 2
        image = (ball * 100.0 + rng.normal(0, 10, ball.shape)).astype(np.float32)
        node = slicer.util.addVolumeFromArray(image, ijkToRAS=np.diag([0.8, 0.8, 1.5, 1.0]), name=name)
        return node, ball

    def test_SparseSeg_loop(self):
        import numpy as np

        from SparseSeg import SparseSegLogic
        from SparseSegLib.errors import SparseSegError
        from SparseSegLib.session import mrml

        self.delayDisplay("Building a volume and a one-slice annotation")
        volume, ball = self._syntheticVolume("SparseSegTestVolume", 0)
        annotation = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "Annotation")
        annotation.CreateDefaultDisplayNodes()
        annotation.SetReferenceImageGeometryParameterFromVolumeNode(volume)
        segmentId = annotation.GetSegmentation().AddEmptySegment("Ball", "Ball", [0.9, 0.5, 0.1])
        painted = np.zeros(ball.shape, np.uint8)
        painted[12] = ball[12]
        slicer.util.updateSegmentBinaryLabelmapFromArray(painted, annotation, segmentId, volume)
        before = mrml.segment_fingerprint(annotation)

        logic = SparseSegLogic()
        p = logic.getParameterNode()
        p.inputVolume, p.annotation = volume, annotation
        p.method, p.rounds, p.iterationsPerRound, p.batchSize, p.device = "sparse-only", 2, 20, 2, "cpu"

        self.delayDisplay("Start: rounds stream into the result segmentation")
        try:
            logic.start(p)  # the first Start probes the worker's Python in the background: None until then
            self._pollUntil(logic, lambda: logic.session is not None and not logic.controller.checking)
        except SparseSegError as error:
            if "declined" in str(error) or "PyTorch extension" in str(error):
                self.skipTest(str(error))
            raise
        session = logic.session
        self.assertIs(p.resultSegmentation, session.result_node)
        self._pollUntil(logic, lambda: not session.running)  # running until the last event is read
        self.assertEqual(session.status, "finished", session.log[-5:])
        self.assertEqual(session.imported_rounds, [1, 2])
        result = session.result_node
        segment = result.GetSegmentation().GetSegment("SparseSeg_1")
        self.assertEqual(segment.GetName(), "Ball")
        self.assertEqual(mrml.segment_tag(segment, "SparseSeg.Round"), "2")
        self.assertEqual(mrml.segment_fingerprint(annotation), before)

        self.delayDisplay("Go to the suggested slice: an unpainted axial slice, in the Red view")
        suggestion, views = logic.goToSuggestedSlice()
        self.assertEqual(suggestion.axis, 0)
        self.assertNotEqual(suggestion.index, 12)
        self.assertIn("Red", views)

        self.delayDisplay("Correct slice 6, Continue")
        corrected = slicer.util.arrayFromSegmentBinaryLabelmap(result, "SparseSeg_1", volume)
        corrected[6] = ball[6]
        slicer.util.updateSegmentBinaryLabelmapFromArray(corrected, result, "SparseSeg_1", volume)
        p.continueRounds = 1
        job = logic.continueSession(p)
        self._pollUntil(logic, lambda: not session.running)
        self.assertEqual(session.imported_rounds[-1], 3)
        self.assertIn(6, session.corrections[-1]["slices"])
        self.assertTrue((job.directory / "inputs" / "annotated.nrrd").is_file())

        self.delayDisplay("Save the model, apply it to a second volume")
        other, _ = self._syntheticVolume("SparseSegTestVolume2", 1)
        p.applyVolume = other
        logic.applyModel(p)  # no model folder yet: saves the session's model first, then applies it
        applied = self._pollUntil(logic, lambda: not logic.busy())
        self.assertIsNotNone(applied)
        self.assertTrue(p.modelDirectory)
        self.assertEqual(applied.GetSegmentation().GetSegment("SparseSeg_1").GetName(), "Ball")
        logic.accept()
        self.delayDisplay("Test passed")
