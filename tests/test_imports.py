"""The layout has no import cycles: fer_tf's modules import each other in one direction only.

Every ``import`` of every module counts, those inside functions too (a function-level import hides a
cycle from Python, not from the reader), and so does ``importlib.import_module("fer_tf....")``.
Rules of the graph:

- ``import a.b.c`` depends on the deepest fer_tf module it names;
- ``from a.b import n`` depends on ``a.b.n`` when that is a module, else on ``a.b`` (``n`` is
  defined by ``a.b``'s code);
- a package is always initialised before its submodules, so the implicit dependency of a module
  on its own enclosing packages is not an edge, and neither is a plain ``import fer_tf`` inside
  fer_tf (it names a package that is already loaded); ``from fer_tf import __version__`` is one.
"""

import ast
import pathlib

REPO = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = REPO / "fer_tf"

#: Cycles that need a change in a file being edited elsewhere, with the change each needs. The test
#: tolerates exactly these (and reports when one has gone, so that the entry can be removed).
PENDING = {}  # cycles known and waiting for a fix: none


def module_files():
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(REPO).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def _deepest(name, modules):
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def _ancestors(name):
    parts = name.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts))}


def _from_source(node, name, path):
    """The module a ``from ... import`` statement of module ``name`` reads, relative levels resolved."""
    if not node.level:
        return node.module or ""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(name, path, modules):
    """``{imported fer_tf module: first line}`` for module ``name`` (see the module docstring)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = {}

    def add(target, node, implicit_ok=True):
        if target is None or target == name:
            return
        if implicit_ok and target in _ancestors(name):
            return
        found.setdefault(target, node.lineno)

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "fer_tf":
                    add(_deepest(alias.name, modules), node)
        elif isinstance(node, ast.ImportFrom):
            source = _from_source(node, name, path)
            if source.split(".")[0] != "fer_tf":
                continue
            for alias in node.names:
                full = f"{source}.{alias.name}"
                if full in modules:
                    add(full, node)
                else:  # a name defined by the code of ``source``: a real dependency on it
                    add(_deepest(source, modules), node, implicit_ok=False)
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr == "import_module" and node.args
              and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)
              and node.args[0].value.startswith("fer_tf")):
            add(_deepest(node.args[0].value, modules), node)
    return found


def import_graph():
    modules = module_files()
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def cycles(graph):
    """The strongly connected components with more than one module (Tarjan's algorithm)."""
    index, low, stack, on_stack, components = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(frozenset(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return components


def _describe(component, graph):
    return "\n".join(f"  {a} -> {b} (line {line})" for a in sorted(component)
                     for b, line in sorted(graph[a].items()) if b in component)


def test_no_import_cycles():
    graph = import_graph()
    found = cycles(graph)
    new = [c for c in found if c not in PENDING]
    assert not new, "import cycles among fer_tf modules:\n" + "\n\n".join(
        _describe(c, graph) for c in new)


def test_pending_cycles_are_still_there():
    """An entry of PENDING whose cycle is gone must be removed (it would hide a new cycle)."""
    found = set(cycles(import_graph()))
    gone = [sorted(c) for c in PENDING if c not in found]
    assert not gone, f"these cycles are fixed; remove them from PENDING: {gone}"


def test_the_graph_sees_function_level_and_relative_imports(tmp_path):
    package = tmp_path / "fer_tf"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("def f():\n    from fer_tf.a import x\n")
    (package / "a.py").write_text("import fer_tf\nfrom fer_tf import __version__\n")
    (package / "b.py").write_text("def g():\n    from fer_tf import a, sub\n")
    (package / "sub" / "__init__.py").write_text("")
    (package / "sub" / "c.py").write_text(
        "import importlib\nfrom . import d\nfrom ..b import g\n"
        "def h():\n    return importlib.import_module('fer_tf.a')\n")
    (package / "sub" / "d.py").write_text("from fer_tf.sub.c import h\n")
    modules = {}
    for path in sorted(package.rglob("*.py")):
        parts = list(path.relative_to(tmp_path).with_suffix("").parts)
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph = {name: imports_of(name, path, modules) for name, path in modules.items()}
    assert set(graph["fer_tf.b"]) == {"fer_tf.a", "fer_tf.sub"}
    assert set(graph["fer_tf.a"]) == {"fer_tf"}  # __version__ comes from __init__'s code
    assert set(graph["fer_tf.sub.c"]) == {"fer_tf.sub.d", "fer_tf.b", "fer_tf.a"}
    assert sorted(map(sorted, cycles(graph))) == [["fer_tf", "fer_tf.a"], ["fer_tf.sub.c", "fer_tf.sub.d"]]


# --- layers ----------------------------------------------------------------------------------------

#: fer_tf's layers in the order data flows (README "Layout"): a module imports only modules of its
#: own layer or of the layers before it. Rank 0 is the base every layer may use.
LAYERS = [("errors", "files", "locking", "media", "progress", "config"), ("data",), ("preprocess",), ("feeding",),
          ("metric",), ("model",), ("training",), ("people",), ("deploy",), ("research",), ("commands",),
          ("cli",)]


def layer_of(module):
    """The rank of a fer_tf module's layer (``None`` for the package root)."""
    parts = module.split(".")
    if len(parts) == 1:
        return None
    for rank, names in enumerate(LAYERS):
        if parts[1] in names:
            return rank
    raise AssertionError(f"{module} belongs to no layer of LAYERS: add its folder there and to README's Layout")


def backward_imports(graph):
    return [f"  {a} -> {b} (line {line})" for a, deps in sorted(graph.items()) for b, line in sorted(deps.items())
            if layer_of(a) is not None and layer_of(b) is not None and layer_of(b) > layer_of(a)]


def test_a_layer_imports_only_the_layers_before_it():
    backward = backward_imports(import_graph())
    assert not backward, ("imports of a later layer (the order is LAYERS, README's Layout):\n"
                          + "\n".join(backward))


def test_the_layer_check_sees_a_backward_import():
    graph = {"fer_tf.data.table": {"fer_tf.preprocess.normalize": 3}, "fer_tf.model.network": {"fer_tf.metric.losses": 1}}
    assert backward_imports(graph) == ["  fer_tf.data.table -> fer_tf.preprocess.normalize (line 3)"]


def test_the_readme_lists_the_layers_in_their_order():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    layout = text[text.index("## Layout"):]
    folders = [line.split("`")[1].rstrip("/") for line in layout.splitlines() if line.startswith("| `")]
    assert folders == [names[0] for names in LAYERS[1:-1]], folders


# --- function-level imports ------------------------------------------------------------------------

#: What a function-level import may defer: packages that are slow to import or optional (numpy
#: counts: the command modules keep `fer-tf --help` free of it), directly or through the
#: module-level imports of the fer_tf module it names.
HEAVY = {"numpy", "tensorflow", "keras", "jax", "torch", "cv2", "mediapipe", "matplotlib", "PIL",
         "ai_edge_litert", "skimage", "scipy", "sklearn", "yaml", "grain", "dlib",
         # the standard library's, but it imports email, zipfile, csv...: more than the rest of
         # `fer-tf --help` (cli.version defers it to --version)
         "importlib.metadata"}


def _function_imports(tree):
    found = []
    for fn in ast.walk(tree):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            found += [n for n in ast.walk(fn) if isinstance(n, (ast.Import, ast.ImportFrom))]
    return found


def _targets(node, name, path, modules):
    """Modules an import statement loads: fer_tf modules resolved as in the cycle graph, others
    by their dotted name."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    source = _from_source(node, name, path)
    return [f"{source}.{a.name}" if f"{source}.{a.name}" in modules else source for a in node.names]


def _module_level_imports(modules):
    out = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        inside = set(map(id, _function_imports(tree)))
        out[name] = {t for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))
                     and id(n) not in inside for t in _targets(n, name, path, modules)}
    return out


def _heavy(target, top, seen=None):
    """The heavy package ``target`` loads when imported (through fer_tf modules), or None."""
    for name in (target, target.split(".")[0]):
        if name in HEAVY:
            return name
    seen = set() if seen is None else seen
    if target in top and target not in seen:
        seen.add(target)
        for inner in sorted(top[target]):
            found = _heavy(inner, top, seen)
            if found:
                return found
    return None


def _commented(lines, index):
    """A comment on the import's line, or above it through a block of imports and blank lines."""
    if "#" in lines[index]:
        return True
    for line in reversed(lines[:index]):
        text = line.strip()
        if text.startswith("#"):
            return True
        if text and not text.startswith(("import ", "from ")):
            return False
        if "#" in text:
            return True
    return False


def deferred_import_problems(modules):
    top = _module_level_imports(modules)
    problems = []
    for name, path in sorted(modules.items()):
        text = path.read_text(encoding="utf-8")
        lines = text.splitlines()
        for node in _function_imports(ast.parse(text)):
            heavy = [_heavy(t, top) for t in _targets(node, name, path, modules)]
            where = f"{path.relative_to(path.parents[len(name.split('.')) - 1])}:{node.lineno}"
            if not all(heavy):
                light = [t for t, h in zip(_targets(node, name, path, modules), heavy) if not h]
                problems.append(f"{where}: imports {light} inside a function, though importing "
                                "it is cheap: move it to the top of the module")
            elif not _commented(lines, node.lineno - 1):
                problems.append(f"{where}: a deferred import of {sorted(set(heavy))} needs a "
                                "comment saying what it defers")
    return problems


def test_function_level_imports_only_defer_heavy_dependencies_and_say_so():
    problems = deferred_import_problems(module_files())
    assert not problems, "\n".join(problems)


def test_the_deferred_import_rule_sees_light_and_uncommented_imports(tmp_path):
    package = tmp_path / "fer_tf"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "light.py").write_text("import json\n")
    (package / "heavy.py").write_text("import numpy\n")
    (package / "user.py").write_text(
        "def a():\n    import json\n"  # light: should be at the top
        "def b():\n    from fer_tf.heavy import x\n"  # heavy through fer_tf.heavy, no comment
        "def c():\n    # deferred: numpy\n    import numpy\n\n    import cv2\n"  # one comment, one block
        "def d():\n    from fer_tf import light  # deferred? no: it is cheap\n")
    modules = {}
    for path in sorted(package.rglob("*.py")):
        parts = list(path.relative_to(tmp_path).with_suffix("").parts)
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    problems = deferred_import_problems(modules)
    assert len(problems) == 3, problems
    assert "user.py:2" in problems[0] and "move it to the top" in problems[0]
    assert "user.py:4" in problems[1] and "needs a comment" in problems[1]
    assert "user.py:11" in problems[2] and "fer_tf.light" in problems[2]
