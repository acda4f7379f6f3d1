"""The saved-model benchmark (``python -m SparseSegLib.benchmarks.saved_model``) on two bundled hippocampus scans:
real worker jobs played by the interactive benchmark, each Start's model written by the module's Save model code and
applied, without paint, to its own scan and to the other one."""

from __future__ import annotations

import json

import pytest

from SparseSegLib.benchmarks.interactive.cli import main as play
from SparseSegLib.benchmarks.saved_model import evaluate, main
from SparseSegLib.engine.model import load_segmenter
from SparseSegLib.io import read_image


def test_each_saved_model_is_scored_on_its_own_and_the_other_scan(sample_dir, tmp_path, capsys):
    pytest.importorskip("itk", reason="the interactive benchmark's baselines need itk (pip install -e .[bench])")
    run = tmp_path / "run"
    assert play(["--dataset", str(sample_dir), "--cases", "2", "--split", "dev", "--method", "sparse-only",
                 "--parameter", "rounds=1", "--parameter", "iterations_per_round=3", "--parameter", "batch_size=2",
                 "--slices", "1", "--device", "cpu", "--threads", "1", "--out", str(run)]) == 0
    played = json.loads((run / "results.json").read_text())["scans"]
    result = evaluate([run], tmp_path / "saved", log=lambda line: None)
    assert len(result["models"]) == 2 == len(played)
    for model in result["models"]:
        own = model["case_id"]
        assert set(model["on_other_scans"]) == {record["case_id"] for record in played.values()}
        assert all(0.0 <= figures["dice"] <= 1.0 for figures in model["on_other_scans"].values())
        # the model applied is the one Save model writes: the job's network, which gives the streamed round on its scan
        segmenter = load_segmenter(tmp_path / "saved" / "models" / model["dataset"] / own)
        record = played[f"{model['dataset']}/{own}"]
        image, _ = read_image(record["image"])
        streamed, _ = read_image(f"{model['job']}/rounds/001/label.nrrd")
        assert (segmenter.predict(image)[0] == streamed).mean() > 0.99
    assert "| hippocampus | 2 |" in (tmp_path / "saved" / "report.md").read_text()
    capsys.readouterr()
    assert main([str(tmp_path), "--out", str(tmp_path / "none")]) == 2
    assert "holds no results.json" in capsys.readouterr().err and not (tmp_path / "none").exists()
