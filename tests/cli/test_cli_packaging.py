"""Packaging: the command's entry point and the LICENSE the wheel ships."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def pyproject() -> dict[str, object]:
    if sys.version_info < (3, 11):
        pytest.skip("tomllib is new in Python 3.11")
    import tomllib

    with (ROOT / "pyproject.toml").open("rb") as file:
        return tomllib.load(file)


def test_the_entry_point_is_the_command(pyproject: dict[str, object]) -> None:
    project = pyproject["project"]
    assert isinstance(project, dict)
    target = project["scripts"]["flux-async"]
    module, _, name = target.partition(":")
    from flux_async._cli import main

    assert getattr(importlib.import_module(module), name) is main


def test_the_license_is_in_the_repository_and_the_wheel(pyproject: dict[str, object]) -> None:
    project = pyproject["project"]
    assert isinstance(project, dict)
    assert project["license"] == "MIT"
    # hatchling puts license-files in the wheel's .dist-info/licenses/.
    assert project["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert text.startswith("MIT License\n\nCopyright (c) 2026 The flux_async authors\n")
    assert "WITHOUT WARRANTY OF ANY KIND" in text
