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


@pytest.mark.parametrize("module", MODULES, ids=str)
def test_architecture_names_every_module(module: Path) -> None:
    """A newcomer finds every module in docs/architecture.md, under its package."""
    name = f"`{module.name}`" if module.parent != Path() else f"`{module.stem}"
    assert name in ARCHITECTURE, f"docs/architecture.md does not mention {module}"
    if module.parent != Path():
        assert f"**`{module.parent}/`**" in ARCHITECTURE
