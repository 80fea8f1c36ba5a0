"""requirements/dev.lock keeps up with pyproject.toml: `make` installs the lock alone, so a
dependency added to pyproject.toml but not locked would only show as an ImportError."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
LOCK = (ROOT / "requirements" / "dev.lock").read_text()
PINNED = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)", re.MULTILINE)


def locked() -> dict[str, set[str]]:
    """Name → the versions the lock pins (one per Python, where markers split them)."""
    found: dict[str, set[str]] = {}
    for name, version in PINNED.findall(LOCK):
        found.setdefault(canonicalize_name(name), set()).add(version)
    return found


REQUIREMENTS = [
    Requirement(spec)
    for spec in [*PROJECT["dependencies"], *PROJECT["optional-dependencies"]["dev"]]
]


@pytest.mark.parametrize("requirement", REQUIREMENTS, ids=str)
def test_every_requirement_is_locked_within_its_range(requirement: Requirement) -> None:
    """Each package pyproject.toml names is pinned, at a version its range allows."""
    versions = locked().get(canonicalize_name(requirement.name))
    assert versions, f"{requirement.name} is not in requirements/dev.lock: run `make lock`"
    for version in versions:
        assert requirement.specifier.contains(version, prereleases=True), (
            f"the lock pins {requirement.name}=={version}, outside {requirement}: `make lock`"
        )


def test_every_pin_carries_hashes() -> None:
    """`pip install --require-hashes` refuses a pin without one."""
    entries = re.split(r"\n(?=[A-Za-z0-9])", LOCK.split("\n", 2)[2])
    assert entries and all("--hash=sha256:" in entry for entry in entries)
