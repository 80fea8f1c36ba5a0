"""The repository's own reference keeps up with the code."""

from __future__ import annotations

from pathlib import Path

import pytest

import executor_streamer

PACKAGE = Path(executor_streamer.__file__).parent
ARCHITECTURE = (PACKAGE.parents[1] / "docs" / "architecture.md").read_text()
MODULES = sorted(
    path.relative_to(PACKAGE)
    for path in PACKAGE.rglob("*.py")
    if path.name not in ("__init__.py", "__main__.py")
)


def section_of(package: Path) -> str:
    """The part of docs/architecture.md about ``package``: from its ``**`package/`**``
    heading to the next such heading (the top-level modules are under ``**`name.py`**``
    and ``**`name`**`` headings of their own)."""
    start = ARCHITECTURE.index(f"**`{package}/`**")
    following = ARCHITECTURE.find("\n**`", start + 1)
    return ARCHITECTURE[start : following if following != -1 else len(ARCHITECTURE)]


@pytest.mark.parametrize("module", MODULES, ids=str)
def test_architecture_names_every_module(module: Path) -> None:
    """A newcomer finds every module in docs/architecture.md, under its own package."""
    if module.parent == Path():
        assert f"`{module.name}`" in ARCHITECTURE or f"`{module.stem}`" in ARCHITECTURE, module
    else:
        assert f"`{module.name}`" in section_of(module.parent), (
            f"docs/architecture.md does not mention {module} under {module.parent}/"
        )
