"""The kernel model's modules import downward only: no cycle, not even one hidden in a function
body or behind `TYPE_CHECKING`. The structs sit at the bottom, as headers do. (The socket layer
above the model is held to runtime imports only: `lookup` names `host.Socket` in annotations.)"""

from __future__ import annotations

import ast
from pathlib import Path

import tracekit.kernel

KERNEL = Path(tracekit.kernel.__file__).parent


def _module(path: Path) -> str:
    parts = path.relative_to(KERNEL.parent.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking_blocks(tree: ast.AST) -> set[int]:
    return {id(inner) for node in ast.walk(tree)
            if isinstance(node, ast.If) and ast.unparse(node.test).endswith("TYPE_CHECKING")
            for inner in ast.walk(node)}


def _imports(path: Path, *, annotations: bool = True) -> set[str]:
    """Every tracekit.kernel module `path` imports, wherever the import statement sits (with
    `annotations=False`, except under `if TYPE_CHECKING:`)."""
    found = set()
    tree = ast.parse(path.read_text())
    skip = set() if annotations else _type_checking_blocks(tree)
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            # `from tracekit.kernel import cbpf` imports the module tracekit.kernel.cbpf
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in found if name.startswith("tracekit.kernel.")}


def _graph(pattern: str = "*.py", *, annotations: bool = True) -> dict[str, set[str]]:
    modules = {_module(p): p for p in KERNEL.glob(pattern)}
    return {name: _imports(path, annotations=annotations) & modules.keys() - {name}
            for name, path in modules.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)) is not None:
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)) is not None:
            return found
    return None


def test_kernel_modules_import_without_a_cycle():
    cycle = _cycle(_graph())
    assert cycle is None, " -> ".join(cycle)


def test_the_socket_layer_imports_the_model_without_a_runtime_cycle():
    cycle = _cycle(_graph("**/*.py", annotations=False))
    assert cycle is None, " -> ".join(cycle)


def test_the_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_structs_sit_below_the_functions():
    graph = _graph()
    assert graph["tracekit.kernel.structs"] <= {"tracekit.kernel.errno", "tracekit.kernel.net",
                                                "tracekit.kernel.profiles"}
    for functions in ("sock", "bpf", "cbpf", "sock_reuseport"):
        assert "tracekit.kernel.structs" in graph[f"tracekit.kernel.{functions}"]


def test_the_old_homes_still_export_the_kernel_names():
    from tracekit.kernel import bpf, sock, sock_reuseport, structs

    assert bpf.BpfProg is structs.BpfProg and bpf.Skb is structs.Skb and bpf.UNKNOWN is structs.UNKNOWN
    assert sock.Sock is structs.Sock and sock.TCP_LISTEN == structs.TCP_LISTEN
    assert sock_reuseport.SockReuseport is structs.SockReuseport
