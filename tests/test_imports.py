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


def imports_of(name, path, modules):
    """``{imported fer_tf module: first line}`` for module ``name`` (see the module docstring)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
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
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
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
