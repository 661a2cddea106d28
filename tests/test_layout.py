"""The package's import graph: no module imports one that imports it back (directly or through others), nothing imports
the command line, and predicting from a video loads none of the explorer's or the statistics' libraries."""
import ast, subprocess, sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "ssl_mepr"
MODULES = sorted(p.stem for p in PACKAGE.glob("*.py") if not p.stem.startswith("_"))
HEAVY = ("ipywidgets", "matplotlib", "statsmodels", "seaborn", "scipy.stats", "IPython.display")  # the explorer's and the analysis's


def imported_modules(path: Path) -> set:
    "The ssl_mepr modules a module file imports anywhere in it, at the top or inside a function (`from .x`, `from ssl_mepr.x`, `import ssl_mepr.x`)."
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and (node.level == 1 or (node.module or "").split(".")[0] == "ssl_mepr"):
            parts = (node.module or "").split(".")
            found |= {a.name for a in node.names} if parts[-1] in ("", "ssl_mepr") else {parts[-1]}
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("ssl_mepr.")}
    return (found & set(MODULES)) - {path.stem}


def import_graph() -> dict:
    "module -> the ssl_mepr modules it imports."
    return {m: imported_modules(PACKAGE / f"{m}.py") for m in MODULES}


def find_cycle(graph: dict) -> list:
    "One cycle of the graph as a path whose first module is repeated at its end, or [] when there is none."
    state, path = {}, []
    def visit(m):
        state[m] = "open"; path.append(m)
        for n in sorted(graph.get(m, ())):
            if state.get(n) == "open": return path[path.index(n):] + [n]
            if n not in state and (cycle := visit(n)): return cycle
        state[m] = "done"; path.pop()
        return []
    for m in sorted(graph):
        if m not in state and (cycle := visit(m)): return cycle
    return []


def modules_loaded_by(module: str) -> list:
    "Which of HEAVY a fresh interpreter has loaded after importing `module`."
    probe = f"import sys, {module}; print(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.split()


def test_the_cycle_finder_finds_cycles_and_only_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) == []


def test_imports_inside_functions_count():
    graph = import_graph()
    assert "cli" in graph and "predict" in graph["cli"]  # cli imports predict inside its functions only
    assert {"run", "attribution"} <= graph["predict"]


def test_the_package_import_graph_is_acyclic():
    cycle = find_cycle(import_graph())
    assert not cycle, " -> ".join(cycle)


def test_nothing_imports_the_command_line():
    assert [m for m, imports in import_graph().items() if "cli" in imports] == []


def test_predict_loads_no_widget_plot_or_statistics_library():
    assert modules_loaded_by("ssl_mepr.predict") == []
    assert {"ipywidgets", "matplotlib"} <= set(modules_loaded_by("ssl_mepr.explore"))  # the probe sees them when they are loaded


MAX_MODULE_LINES, MAX_FUNCTION_LINES = 600, 60
ENGINE = ("gradients",)  # the per-term gradient engine: an optimisation checked against the plain loop, allowed longer functions


def test_modules_and_functions_stay_readable():
    "No module reaches 600 lines and no function 60 lines (the gradient engine's functions excepted)."
    long_modules = {m: n for m in MODULES if (n := len((PACKAGE / f"{m}.py").read_text(encoding="utf-8").splitlines())) >= MAX_MODULE_LINES}
    assert not long_modules, f"modules of {MAX_MODULE_LINES} lines or more: {long_modules}"
    long_functions = [f"{m}.{node.name} ({node.end_lineno - node.lineno + 1} lines)" for m in MODULES if m not in ENGINE
                      for node in ast.walk(ast.parse((PACKAGE / f"{m}.py").read_text(encoding="utf-8")))
                      if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]
    assert not long_functions, f"functions over {MAX_FUNCTION_LINES} lines: {long_functions}"


def test_notebooks_in_data_flow_order():
    "No numbered notebook uses a module whose notebook is numbered after it (in any of its code cells)."
    import json, re
    notebooks = sorted((PACKAGE.parent / "nbs").glob("[0-9][0-9]_*.ipynb"))
    code = {nb.name: "\n".join("".join(c["source"]) for c in json.loads(nb.read_text(encoding="utf-8"))["cells"] if c["cell_type"] == "code")
            for nb in notebooks}
    home = {m.group(1): name for name, src in code.items() if (m := re.search(r"#\| default_exp (\w+)", src))}
    later = [(name, home[used]) for name, src in code.items() for used in set(re.findall(r"ssl_mepr\.(\w+)", src)) & set(home)
             if home[used] > name]
    assert not later, f"notebooks using a module whose notebook comes later: {later}"


def test_no_temporary_folder_outlives_its_process():
    "Notebooks, modules and tests make temporary folders that are removed: `scratch_folder` or a `with` block, never a bare mkdtemp."
    root = PACKAGE.parent
    sources = [*root.glob("nbs/*.ipynb"), *PACKAGE.glob("*.py"), *root.glob("tests/*.py"), *root.glob("bench/*.py")]
    bare = [p.relative_to(root).as_posix() for p in sources if p != Path(__file__).resolve()
            and "mkdtemp(" in p.read_text(encoding="utf-8")]
    assert not bare, f"files with a bare tempfile.mkdtemp (use ssl_mepr.features.scratch_folder): {bare}"
