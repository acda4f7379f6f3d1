"""The ExtensionsIndex entry and the extension's metadata, checked offline against the index's own rules
(docs/extension-index.md): the entry against the catalog-entry JSON schemas, formatted as the index's prettier
writes it; the index's description-file checks that need no network; and every URL of CMakeLists.txt and the
entry derived from the one assumed home, with the icon and screenshot files they name present in the repository.
"""

from __future__ import annotations

import json
import re
import struct
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[1]
ENTRY = ROOT / "Resources" / "ExtensionsIndex" / "SparseSeg.json"
TOP_CMAKE = ROOT / "CMakeLists.txt"
DOC = ROOT / "docs" / "extension-index.md"

# The catalog-entry schemas, as data. Copied from github.com/Slicer/ExtensionsIndex at 07f1d1b278 (2026-08-07):
# schemas/slicer-extension-catalog-entry-schema-v1.0.1.json (identical to Slicer/Slicer main 583e9b37d5,
# Schemas/..., last changed cf2a70e633) and schemas/slicer-extension-catalog-entry-schema-v1.0.2.json (d3b05346c3).
# Both: draft-07, "type": "object", "additionalProperties": false.
_V1_0_1_PROPERTIES = {
    "$schema": {"type": "string"},
    "category": {"type": "string"},
    "scm_url": {"type": "string"},
    "scm_revision": {"type": "string"},
    "scm_type": {"type": "string", "enum": ["git", "local"]},
    "build_dependencies": {"type": "array", "items": {"type": "string"}},
    "build_subdirectory": {"type": "string"},
    "enabled": {"type": "boolean"},
    "tier": {"type": "integer", "minimum": 1, "maximum": 5},
}
SCHEMAS = {
    "v1.0.1": {"required": ["$schema", "category", "scm_url"], "properties": _V1_0_1_PROPERTIES},
    "v1.0.2": {"required": ["$schema", "category", "scm_url"],
               "properties": {**_V1_0_1_PROPERTIES, "dicom_support_rule": {"type": "string"}}},
}
SCHEMA_URL = "https://raw.githubusercontent.com/Slicer/Slicer/main/Schemas/slicer-extension-catalog-entry-schema-{}.json#"

# ACCEPTED_EXTENSION_CATEGORIES of scripts/check_description_files.py, same ExtensionsIndex commit (43753a5540).
ACCEPTED_CATEGORIES = {
    "Active Learning", "Analysis", "Auto3dgm", "BigImage", "Cardiac", "Chest Imaging Platform", "Conda", "Converters",
    "DICOM", "DSCI", "Developer Tools", "Diffusion", "Examples", "Exporter", "FTV Segmentation", "Filtering",
    "Filtering.Morphology", "Filtering.Vesselness", "Holographic Display", "Image Synthesis", "IGT", "Informatics",
    "Netstim", "Neuroimaging", "Nuclear Medicine", "Orthodontics", "Osteotomy Planning", "Otolaryngology",
    "Photogrammetry", "Pipelines", "Planning", "Printing", "Quantification", "Radiotherapy", "Registration", "Remote",
    "Rendering", "SPHARM", "Segmentation", "Sequences", "Shape Analysis", "Shape Regression", "Shape Visualization",
    "Simulation", "SlicerCMF", "SlicerMorph", "Spectral Imaging", "Supervisely", "Surface Models", "SurfaceLearner",
    "Tomographic Reconstruction", "Tracking", "Tractography", "Training", "Ultrasound", "Utilities",
    "Vascular Modeling Toolkit", "Virtual Reality", "VisSimTools", "Web System Tools", "Wizards",
}
#: Repository names the index accepts (check_git_repository_name's allowed prefixes).
REPOSITORY_PREFIXES = ("Slicer", "Slicer-", "Slicer_", "SlicerExtension-", "SlicerExtension_")
#: Extensions in the index that SparseSeg may depend on (PyTorch.json exists there at the commit above).
INDEX_EXTENSIONS = {"PyTorch"}


def schema_errors(entry, schema: dict) -> list[str]:
    """What a draft-07 validator would report for these schemas' keywords (type, enum, minimum, maximum, items,
    required, additionalProperties false); empty when the entry is valid."""
    if not isinstance(entry, dict):
        return ["the entry is not a JSON object"]
    errors = [f"'{key}' is a required property" for key in schema["required"] if key not in entry]
    for key, value in entry.items():
        rule = schema["properties"].get(key)
        if rule is None:
            errors.append(f"additional property '{key}' is not allowed")
            continue
        kind = rule["type"]
        ok = {"string": isinstance(value, str), "boolean": isinstance(value, bool),
              "integer": isinstance(value, int) and not isinstance(value, bool),
              "array": isinstance(value, list)}[kind]
        if not ok:
            errors.append(f"{key}: {value!r} is not of type {kind}")
            continue
        if "enum" in rule and value not in rule["enum"]:
            errors.append(f"{key}: {value!r} is not one of {rule['enum']}")
        if "minimum" in rule and value < rule["minimum"] or "maximum" in rule and value > rule["maximum"]:
            errors.append(f"{key}: {value!r} is outside {rule.get('minimum')}..{rule.get('maximum')}")
        if kind == "array" and not all(isinstance(item, str) for item in value):
            errors.append(f"{key}: every item must be a string")
    return errors


def entry() -> dict:
    return json.loads(ENTRY.read_text(encoding="utf-8"))


def cmake_settings() -> dict[str, str]:
    """``{"HOMEPAGE": value, ...}`` of the literal ``set(EXTENSION_X "value")`` lines, as the index reads them."""
    text = TOP_CMAKE.read_text()
    return dict(re.findall(r'^\s*set\s*\(\s*EXTENSION_(\w+)\s+"([^"]*)"\s*\)', text, flags=re.M | re.I))


def assumed_home() -> str:
    match = re.search(r"^\*\*Assumed home: (https://github\.com/[\w.-]+/[\w.-]+)\*\*", DOC.read_text(), flags=re.M)
    assert match, f"{DOC.relative_to(ROOT)} must state the home as '**Assumed home: https://github.com/OWNER/REPO**'"
    return match.group(1)


def raw_path(url: str, home: str, revision: str) -> str:
    """The repository path a raw.githubusercontent.com URL of ``home`` at ``revision`` names (AssertionError if the
    URL is not one)."""
    owner_repo = urlsplit(home).path.strip("/")
    prefix = f"https://raw.githubusercontent.com/{owner_repo}/{revision}/"
    assert url.startswith(prefix), f"{url} is not a file of {home} at {revision} (expected {prefix}...)"
    return url[len(prefix):]


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


# --------------------------------------------------------------------------------------------------
# The entry against the schemas and the index's formatting


@pytest.mark.parametrize("version", sorted(SCHEMAS))
def test_entry_is_valid_against_the_catalog_schema(version):
    assert schema_errors(entry(), SCHEMAS[version]) == []


def test_entry_names_a_published_schema_version():
    assert entry()["$schema"] == SCHEMA_URL.format("v1.0.1")


def test_the_schema_check_rejects_broken_entries():
    good = entry()
    broken = [
        ({k: v for k, v in good.items() if k != "category"}, "'category' is a required property"),
        ({**good, "tier": 7}, "tier: 7 is outside 1..5"),
        ({**good, "tier": True}, "tier: True is not of type integer"),
        ({**good, "build_dependencies": "PyTorch"}, "build_dependencies: 'PyTorch' is not of type array"),
        ({**good, "build_dependencies": ["PyTorch", 1]}, "build_dependencies: every item must be a string"),
        ({**good, "scm_type": "svn"}, "scm_type: 'svn' is not one of ['git', 'local']"),
        ({**good, "homepage": "x"}, "additional property 'homepage' is not allowed"),
        ({**good, "dicom_support_rule": "True"}, "additional property 'dicom_support_rule' is not allowed"),
    ]
    for candidate, message in broken:
        assert message in schema_errors(candidate, SCHEMAS["v1.0.1"]), message
    assert schema_errors({**good, "dicom_support_rule": "True"}, SCHEMAS["v1.0.2"]) == []


def test_entry_is_formatted_as_the_index_lint_writes_it():
    """prettier with multiline arrays (threshold 0: each item on its own line), LF endings, a final newline."""
    raw = ENTRY.read_bytes()
    assert b"\r" not in raw and b"\t" not in raw
    text = raw.decode("utf-8")
    assert text == json.dumps(entry(), indent=2, ensure_ascii=False) + "\n"
    assert not any(line != line.rstrip() for line in text.splitlines())


# --------------------------------------------------------------------------------------------------
# The index's description-file checks that need no network (scripts/check_description_files.py)


def test_entry_passes_the_index_description_checks():
    data = entry()
    name = ENTRY.stem
    assert data["category"] in ACCEPTED_CATEGORIES
    url = urlsplit(data["scm_url"])
    assert url.scheme in ("https", "git") and url.netloc
    repository = Path(url.path).stem
    assert repository.startswith(REPOSITORY_PREFIXES), f"repository {repository} should start with Slicer"
    assert not name.lower().startswith("slicer"), "the extension's name should not start with Slicer"
    project = re.search(r"^\s*project\s*\(\s*([^\s)]+)", TOP_CMAKE.read_text(), flags=re.M | re.I)
    assert project and project.group(1) == name, "project() of CMakeLists.txt must be the entry's file name"
    assert set(data.get("build_dependencies", [])) <= INDEX_EXTENSIONS
    assert (ROOT / "LICENSE").is_file()


def test_cmake_urls_are_literal_image_urls():
    """The index reads EXTENSION_ICONURL and EXTENSION_SCREENSHOTURLS with a regular expression (no CMake
    variables) and downloads each as an image."""
    settings = cmake_settings()
    urls = [settings["ICONURL"]] + settings["SCREENSHOTURLS"].split()
    assert len(urls) >= 2, "at least one screenshot"
    for url in urls + [settings["HOMEPAGE"]]:
        assert "${" not in url and url.startswith("https://"), url
    for url in urls:
        assert url.lower().endswith((".png", ".jpg", ".jpeg", ".gif")), url


def test_tracked_files_fit_the_index_size_limit():
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    total = sum((ROOT / name).stat().st_size for name in listed.decode().split("\0") if name and (ROOT / name).is_file())
    # the index measures the whole clone, .git included, against 100 MB: keep the tracked files under half of that
    assert total < 50 * 2**20, f"{total / 2**20:.1f} MB of tracked files"


# --------------------------------------------------------------------------------------------------
# One home, and the files the URLs name


def test_every_url_derives_from_the_one_assumed_home():
    home = assumed_home()
    data = entry()
    settings = cmake_settings()
    revision = data["scm_revision"]
    assert data["scm_url"] in (home, home + ".git"), f"scm_url {data['scm_url']} is not {home}"
    assert settings["HOMEPAGE"] in (home, home + "#readme"), f"EXTENSION_HOMEPAGE {settings['HOMEPAGE']} is not {home}"
    raw_path(settings["ICONURL"], home, revision)
    for url in settings["SCREENSHOTURLS"].split():
        raw_path(url, home, revision)
    assert data["category"] == settings["CATEGORY"]
    depends = [] if settings["DEPENDS"] == "NA" else settings["DEPENDS"].split()
    assert data.get("build_dependencies", []) == depends
    # the home is written once in docs: no other page names another repository for the extension
    for page in sorted((ROOT / "docs").rglob("*.md")) + [ROOT / "README.md"]:
        for other in set(re.findall(r"github\.com/[\w.-]+/Slicer[\w.-]*SparseSeg", page.read_text())):
            assert other == home.split("://", 1)[1], f"{page.relative_to(ROOT)} names {other}"


def test_the_icon_and_screenshot_urls_name_files_in_the_repository():
    home, settings = assumed_home(), cmake_settings()
    revision = entry()["scm_revision"]
    icon = ROOT / raw_path(settings["ICONURL"], home, revision)
    assert icon.is_file(), f"EXTENSION_ICONURL names {icon.relative_to(ROOT)}, which is not in the repository"
    assert png_size(icon) == (128, 128)
    screenshots = [ROOT / raw_path(url, home, revision) for url in settings["SCREENSHOTURLS"].split()]
    for shot in screenshots:
        assert shot.is_file(), f"EXTENSION_SCREENSHOTURLS names {shot.relative_to(ROOT)}, which is not in the repository"
        width, height = png_size(shot)
        assert width >= 800 and height >= 500, (shot, width, height)
        assert shot.stat().st_size < 500 * 1024, f"{shot} is {shot.stat().st_size // 1024} KB"
    tracked = subprocess.run(["git", "ls-files", "--", *[str(p.relative_to(ROOT)) for p in [icon] + screenshots]],
                             cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    assert len(tracked) == 1 + len(screenshots), "the icon and screenshots must be committed, not only on disk"


# --------------------------------------------------------------------------------------------------
# The screenshot script still runs (the .ui, the session code it reuses and VTK offscreen)


def test_the_screenshot_script_renders_a_job(tmp_path):
    """``Resources/Screenshots/make_screenshot.py`` (with its modules ``screenshot_job``, ``screenshot_panel`` and
    ``screenshot_slice_view``) on a small job made from a bundled sample scan: the .ui loads
    with the stand-ins, the panel is filled from the events, VTK renders the slice view offscreen, a PNG comes out.
    Skipped where PySide6 or an offscreen OpenGL for VTK is missing."""
    pytest.importorskip("PySide6.QtUiTools", reason="needs PySide6")
    pytest.importorskip("vtk")
    import os
    import sys

    from SparseSegLib.io import read_image, read_label, write_image

    sample = ROOT / "Resources" / "SampleData" / "hippocampus"
    image, geometry = read_image(sample / "imagesTr" / "hippocampus_001.nii.gz")
    label = read_label(sample / "labelsTr" / "hippocampus_001.nii.gz", geometry)
    job = tmp_path / "job"
    (job / "rounds" / "001").mkdir(parents=True)
    write_image(image, geometry, job / "inputs" / "image.nrrd")
    write_image(label.astype("uint8"), geometry, job / "rounds" / "001" / "label.nrrd")
    (job / "job.json").write_text(json.dumps({"method": "propagate", "case_id": "sample", "inputs": {
        "image": "inputs/image.nrrd"}, "classes": {"1": {"name": "Anterior"}, "2": {"name": "Posterior"}}}))
    events = [{"event": "started", "method": "propagate", "rounds": None, "device": "cpu", "pid": 1},
              {"event": "log", "message": "propagate plans 2 round(s)"},
              {"event": "round", "round": 1, "rounds": 2, "files": {"label": "rounds/001/label.nrrd"},
               "suggested_slice": {"axis": 0, "index": 12, "score": 1.0, "ijk": [10, 20, 12]}},
              {"event": "progress", "round": 2, "rounds": 2, "step": 50, "total": 100, "eta_s": 30.0}]
    (job / "events.jsonl").write_text("".join(json.dumps({**e, "seq": n + 1, "time": 1.0 + n}) + "\n"
                                              for n, e in enumerate(events)))
    out = tmp_path / "shot.png"
    completed = subprocess.run([sys.executable, str(ROOT / "Resources" / "Screenshots" / "make_screenshot.py"),
                                "--job", str(job), "--out", str(out)], capture_output=True, text=True, timeout=300,
                               env={**os.environ, "QT_QPA_PLATFORM": "offscreen"})
    if completed.returncode != 0 and "VTK rendered an empty image" in completed.stderr:
        pytest.skip(completed.stderr.strip().splitlines()[-1])
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "round 2/2, step 50/100, ETA 0:30 for this round; annotate next: axial slice 12" in completed.stdout
    width, height = png_size(out)
    assert width > 900 and height > 600
