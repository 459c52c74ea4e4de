"""The layout's rules, checked on the source: imports flow one way, capabilities stay apart,
pipelines hold wiring only, and no data set's field names live in code."""

import ast
import json
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
CAPABILITIES = ("credit", "radar", "evaluation")


def _modules(folder: str):
    return sorted((ROOT / folder).rglob("*.py"))


def _imports(path: pathlib.Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def _string_constants(path: pathlib.Path) -> set[str]:
    """String literals of a module, docstrings left out."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) \
                and node.body and isinstance(node.body[0], ast.Expr) \
                and isinstance(node.body[0].value, ast.Constant):
            docstrings.add(id(node.body[0].value))
    return {node.value for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str)
            and id(node) not in docstrings}


@pytest.mark.parametrize("path", _modules("models"), ids=lambda p: str(p.relative_to(ROOT)))
def test_models_import_nothing_above_them(path):
    above = {m for m in _imports(path) if m.split(".")[0] in ("transforms", "pipelines")}
    assert not above, f"{path.relative_to(ROOT)} imports {sorted(above)}"


@pytest.mark.parametrize("path", _modules("transforms"), ids=lambda p: str(p.relative_to(ROOT)))
def test_transforms_never_import_pipelines_and_capabilities_stay_apart(path):
    imports = _imports(path)
    assert not {m for m in imports if m.split(".")[0] == "pipelines"}
    parts = path.relative_to(ROOT / "transforms").parts
    own = parts[0] if len(parts) > 1 else None
    others = {m for m in imports if m.split(".")[0] == "transforms"
              and len(m.split(".")) > 1 and m.split(".")[1] in CAPABILITIES
              and m.split(".")[1] != own}
    assert not others, f"{path.relative_to(ROOT)} imports another capability: {sorted(others)}"


@pytest.mark.parametrize("path", _modules("pipelines"), ids=lambda p: str(p.relative_to(ROOT)))
def test_pipelines_define_no_dofn_or_ptransform(path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            bases = {ast.unparse(b) for b in node.bases}
            assert not bases & {"beam.DoFn", "DoFn", "beam.PTransform", "PTransform"}, \
                f"{path.relative_to(ROOT)} defines {node.name}"


def _field_names(model_name: str) -> set[str]:
    config = json.loads((ROOT / "models" / "shipped_config" / "datasets"
                         / f"{model_name}.json").read_text())
    return {f["name"] for f in config["fields"]} | {config["label"]["column"]}


# The offer rules' quote vocabulary (amount, duration_months, purpose) is the project's own; a
# German field may share a name with it.
QUOTE_WORDS = {"amount", "duration_months", "purpose"}


@pytest.mark.parametrize("model_name", ["credit_crx", "credit_german"])
def test_no_data_set_field_name_is_written_in_code(model_name):
    names = _field_names(model_name) - QUOTE_WORDS - {"label"}
    found = {}
    for folder in ("pipelines", "transforms", "models"):
        for path in _modules(folder):
            hits = names & _string_constants(path)
            if hits:
                found[str(path.relative_to(ROOT))] = sorted(hits)
    assert not found, f"field names of {model_name} in code: {found}"


@pytest.mark.parametrize("folder", ["models", "transforms", "pipelines", "services", "runners"])
def test_nothing_below_the_command_imports_it(folder):
    for path in _modules(folder):
        assert not {m for m in _imports(path) if m.split(".")[0] == "beamline"}, path


def test_the_evaluated_pipelines_of_the_options_are_the_capabilities():
    from pipelines.capabilities import CAPABILITIES
    from pipelines.options import EVALUATED_PIPELINES

    assert sorted(EVALUATED_PIPELINES) == sorted(CAPABILITIES)
