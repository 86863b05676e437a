"""The README's two first commands exist and .ci/run calls the test command verbatim."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _command(prefix: str) -> str:
    for line in (ROOT / "README.md").read_text().splitlines()[:12]:
        if line.startswith(prefix):
            return line[len(prefix):].strip().strip("`")
    raise AssertionError(f"README has no {prefix!r} line near the top")


def test_ci_runs_the_readme_test_command() -> None:
    assert _command("Tests:") in (ROOT / ".ci" / "run").read_text()


def test_demo_command_runs_foliosim() -> None:
    assert "foliosim" in _command("Demo:")


def test_docs_link_only_inside_the_project() -> None:
    """A user who clones the project has only the project: README and docs link nothing above it."""
    import re

    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#\s]+)", path.read_text()):
            if "://" in target:
                continue
            assert (path.parent / target).resolve().is_relative_to(ROOT), f"{path.name} links outside: {target}"
            assert (path.parent / target).exists(), f"{path.name} links a missing file: {target}"
