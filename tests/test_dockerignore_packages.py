"""The image's build context (.dockerignore is an allow-list) holds every package folder.

pyproject.toml maps each import package to a top-level folder; one missing from the
allow-list builds a wheel without it, and the server then fails at import in the image only.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_every_package_folder_reaches_the_docker_build() -> None:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    folders = {path.split("/")[0] for path in config["tool"]["setuptools"]["package-dir"].values()}
    allowed = {
        line[1:].strip("/")
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    }
    assert folders - allowed == set(), f"add to .dockerignore: {sorted(folders - allowed)}"
