"""The layering rules the code keeps, checked on the source so they cannot erode quietly."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "sammed"


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def _modules_without(code: str) -> list[str]:
    """Heavy modules imported by running ``code`` in a fresh interpreter."""
    probe = f"{code}\nimport sys\nprint('loaded:' + ','.join(m for m in ('torch', 'SimpleITK', 'monai') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    line = [ln for ln in result.stdout.splitlines() if ln.startswith("loaded:")][-1]
    return [m for m in line.removeprefix("loaded:").split(",") if m]


def test_registry_imports_without_torch() -> None:
    assert _modules_without("import sammed.models.registry as r; r.get_model_spec('sam-med3d-turbo')") == []


def test_models_list_imports_without_torch() -> None:
    code = "import contextlib, io\nfrom sammed.cli import main\nwith contextlib.redirect_stdout(io.StringIO()):\n    main(['models', 'list'])"
    assert _modules_without(code) == []


def test_nothing_outside_the_cli_imports_it() -> None:
    offenders = [
        str(path.relative_to(SRC))
        for path in SRC.rglob("*.py")
        if "cli" not in path.relative_to(SRC).parts and path.name != "__main__.py" and any(m.startswith("sammed.cli") for m in _imports(path))
    ]
    assert offenders == []


def test_inference_does_not_import_the_exporter() -> None:
    offenders = [
        str(path.relative_to(SRC))
        for path in (SRC / "inference").rglob("*.py")
        if any(m.startswith("sammed.export") for m in _imports(path))
    ]
    assert offenders == []


def test_axis_order_changes_only_in_io_and_geometry() -> None:
    """SimpleITK's [k, j, i] arrays become ours in ``sammed.io`` and ``sammed.geometry`` only."""
    allowed = {"io", "geometry.py"}
    offenders = [
        str(path.relative_to(SRC))
        for path in SRC.rglob("*.py")
        if path.relative_to(SRC).parts[0] not in allowed
        and any(marker in path.read_text() for marker in ("transpose(2, 1, 0)", "sitk.Resample("))
    ]
    assert offenders == []


def test_build_model_sets_no_attribute_on_the_module() -> None:
    """The registry entry of a built model is looked up beside it (spec_of), not stored on it."""
    from sammed.models import build_model
    from sammed.models.registry import spec_of

    model = build_model("sam-med3d-tiny")
    assert "spec" not in vars(model) and not hasattr(model, "spec")
    assert spec_of(model).name == "sam-med3d-tiny" and spec_of(object()) is None
