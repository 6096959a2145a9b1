"""docs/architecture.md's module table lists exactly the package's modules (no missing, no stale row)."""

import pathlib
import re

REPO = pathlib.Path(__file__).resolve().parents[1]


def documented_modules(text):
    """The module paths named in the first column of the table's rows (globs expanded)."""
    found = set()
    for line in text.splitlines():
        if not line.startswith("| `fer_tf/"):
            continue
        first_cell = line.split("|")[1]
        for pattern in re.findall(r"`(fer_tf/[^`]+\.py)`", first_cell):
            matches = sorted(REPO.glob(pattern))
            found |= {str(p.relative_to(REPO)) for p in matches if p.name != "__init__.py"}
            if not any(c in pattern for c in "*?["):
                found.add(pattern)
    return found


def package_modules():
    return {str(p.relative_to(REPO)) for p in (REPO / "fer_tf").rglob("*.py") if p.name != "__init__.py"}


def test_the_module_table_matches_the_package():
    documented = documented_modules((REPO / "docs" / "architecture.md").read_text(encoding="utf-8"))
    actual = package_modules()
    assert not actual - documented, f"modules without a row in docs/architecture.md: {sorted(actual - documented)}"
    assert not documented - actual, f"rows for modules that do not exist: {sorted(documented - actual)}"


def test_the_table_check_sees_a_missing_row():
    text = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")
    without = "\n".join(line for line in text.splitlines() if "`fer_tf/config.py`" not in line)
    assert "fer_tf/config.py" in package_modules() - documented_modules(without)
