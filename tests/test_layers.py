"""The package's imports point one way (cli -> registry -> ops -> reader -> store), with no cycle, and
the pure core imports nothing that does I/O. Lazy imports inside functions count too."""
import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "modelctl"
PURE = {"state", "analysis", "routing", "trailers", "names", "tags", "observation", "errors", "bundle"}
IO = {"store", "reader", "registry", "ops", "watch", "cli", "doctor", "checks", "review", "history", "demo"}


def _graph() -> dict[str, set[str]]:
    mods = {p.stem: p for p in PACKAGE.glob("*.py")}
    graph = {}
    for name, path in mods.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                deps |= {node.module.split(".")[0]} if node.module else {a.name for a in node.names}
        graph[name] = {d for d in deps if d in mods and d != name}
    return graph


def _reaches(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for dep in graph[todo.pop()]:
            if dep not in seen:
                seen.add(dep)
                todo.append(dep)
    return seen


def test_no_import_cycle():
    graph = _graph()
    cyclic = sorted(m for m in graph if m in _reaches(graph, m))
    assert cyclic == [], f"modules on an import cycle: {cyclic}"


def test_the_layers_point_down():
    graph = _graph()
    assert not {"registry", "cli"} & _reaches(graph, "ops"), "ops must not climb back to the facade"
    assert not {"ops", "registry", "cli", "watch"} & _reaches(graph, "reader")
    assert _reaches(graph, "store") <= {"errors", "tags", "trailers", "names", "secrets"}


def test_the_pure_core_does_no_io():
    graph = _graph()
    for module in PURE:
        assert not IO & _reaches(graph, module), f"{module} imports {sorted(IO & _reaches(graph, module))}"
