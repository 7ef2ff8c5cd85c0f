"""pyproject.toml follows the Comfy Registry's specification, and the README installs by the same id."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
META = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
SEMVER = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?$")


def test_node_id_version_and_description():
    project = META["project"]
    assert "comfyui" not in project["name"].lower()
    assert re.fullmatch(r"[a-z0-9][a-z0-9-_]{1,99}", project["name"])
    assert SEMVER.match(project["version"])
    assert 20 < len(project["description"]) <= 500
    assert not any(d.split("=")[0].split(">")[0].strip().lower() in ("torch", "torchvision", "torchaudio")
                   for d in project["dependencies"])


def test_comfy_section_has_a_display_name_and_an_icon_in_the_repository():
    comfy = META["tool"]["comfy"]
    assert comfy["DisplayName"].strip() and comfy["PublisherId"].strip()
    icon = comfy["Icon"]
    assert icon.startswith("https://") or (ROOT / icon).is_file(), icon
    assert comfy["requires-comfyui"].startswith(">=")


def test_the_readme_installs_by_the_registry_id():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    name = META["project"]["name"]
    assert f"comfy node install {name}" in readme
    assert f"registry id is `{name}`" in readme
