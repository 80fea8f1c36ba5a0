"""The package root: what it exports, and what importing it and the client costs."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

import executor_streamer

ROOT = Path(executor_streamer.__file__)
SERVER_STACK = (
    "fastapi",
    "starlette",
    "uvicorn",
    "sqlalchemy",
    "redis",
    "limits",
    "prometheus_client",
    "executor_streamer.server",
    "executor_streamer.core.hub",
)


def loaded_after(code: str) -> set[str]:
    """The top-level packages and package modules a fresh interpreter holds after ``code``."""
    probe = f"import sys\n{code}\nprint('\\n'.join(sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", probe], check=True, capture_output=True, text=True
    ).stdout
    return set(out.split())


def names_imported_for_type_checking() -> dict[str, str]:
    """``name -> module`` from the root's ``if TYPE_CHECKING:`` block."""
    tree = ast.parse(ROOT.read_text())
    block = next(
        node
        for node in tree.body
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING"
    )
    return {
        alias.name: "." * stmt.level + (stmt.module or "")
        for stmt in block.body
        if isinstance(stmt, ast.ImportFrom)
        for alias in stmt.names
    }


class TestExports:
    def test_every_public_name_has_a_home(self) -> None:
        """__all__, the lazy table and the imports type checkers read name the same things."""
        public = set(executor_streamer.__all__) - {"__version__"}
        assert set(executor_streamer._EXPORTS) == public
        assert names_imported_for_type_checking() == executor_streamer._EXPORTS

    @pytest.mark.parametrize("name", sorted(executor_streamer._EXPORTS))
    def test_a_name_is_the_object_its_module_defines(self, name: str) -> None:
        """Each export is the very object of the module the table names."""
        module = importlib.import_module(executor_streamer._EXPORTS[name], "executor_streamer")
        assert getattr(executor_streamer, name) is getattr(module, name)

    def test_an_unknown_name_is_an_attribute_error(self) -> None:
        """A typo fails as for any module, naming the attribute."""
        with pytest.raises(AttributeError, match="no_such_thing"):
            executor_streamer.no_such_thing  # noqa: B018

    def test_dir_lists_the_public_names(self) -> None:
        """Completion in a REPL offers what __all__ promises."""
        assert set(executor_streamer.__all__) <= set(dir(executor_streamer))


class TestImportCost:
    def test_the_client_loads_no_server_storage_or_metrics_library(self) -> None:
        """A producer importing HubClient pays for an HTTP client, not for the hub."""
        loaded = loaded_after("from executor_streamer import HubClient")
        assert "httpx" in loaded and "executor_streamer.client" in loaded
        assert sorted(loaded & set(SERVER_STACK)) == []

    def test_the_package_alone_loads_nothing_of_its_own(self) -> None:
        """``import executor_streamer`` imports no submodule until a name is used."""
        loaded = loaded_after("import executor_streamer")
        assert sorted(m for m in loaded if m.startswith("executor_streamer.")) == []

    def test_importing_changes_no_other_librarys_settings(self) -> None:
        """starlette-compress's content types are the same before and after importing the
        server; only an app that turns compression on changes them."""
        code = (
            "import starlette_compress._utils as sc  # where its process-wide settings live\n"
            "before = (set(sc._compress_content_types), set(sc._streaming_content_types))\n"
            "import executor_streamer, executor_streamer.server\n"
            "from executor_streamer import HubClient, ExecutorStreamer, create_app\n"
            "after = (set(sc._compress_content_types), set(sc._streaming_content_types))\n"
            "assert before == after, (before, after)\n"
            "assert 'text/event-stream' in before[0] | before[1]\n"
        )
        subprocess.run([sys.executable, "-c", code], check=True)


def test_no_module_is_over_600_lines() -> None:
    """Small modules (docs/architecture.md, "Modules"): one past 600 lines is split."""
    long = {
        str(path.relative_to(ROOT.parent)): lines
        for path in ROOT.parent.rglob("*.py")
        if (lines := len(path.read_text().splitlines())) > 600
    }
    assert not long, long
