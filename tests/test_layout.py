"""The package layout's rules: no import loops (not even through imports placed inside functions), and the
families and kernels registries list only what exists."""

import ast
from pathlib import Path

import xlstm_mlx
from xlstm_mlx import kernels, models

PKG = Path(xlstm_mlx.__file__).parent


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PKG.rglob("*.py")}


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Every xlstm_mlx module `name` imports, at the top or inside a function (explicit imports only)."""
    is_pkg = path.name == "__init__.py"
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name in known}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_pkg else name.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("xlstm_mlx"):
                continue
            for a in node.names:
                sub = f"{target}.{a.name}"
                out.add(sub if sub in known else target)
    out.discard(name)
    return {m for m in out if m in known}


def test_no_import_loops():
    mods = _modules()
    graph = {m: _imports(m, p, set(mods)) for m, p in mods.items()}
    loops = []

    def visit(m, stack, on_stack, done):
        stack.append(m)
        on_stack.add(m)
        for n in sorted(graph[m]):
            if n in on_stack:
                loops.append(" -> ".join(stack[stack.index(n):] + [n]))
            elif n not in done:
                visit(n, stack, on_stack, done)
        on_stack.discard(m)
        stack.pop()
        done.add(m)

    done: set[str] = set()
    for m in sorted(graph):
        if m not in done:
            visit(m, [], set(), done)
    assert not loops, "import loops:\n  " + "\n  ".join(sorted(set(loops)))


def test_registries_name_what_exists():
    for name in models.FAMILIES:
        fam = models.get_family(name)
        assert fam.NAME == name
    assert all(k.count(".") == 1 and k.split(".")[0] in ("mlstm", "slstm", "matmul", "norm", "math", "ffn", "embed", "rows",
                                                                "logits")
               for k in kernels.KERNELS)


def test_issue_numbers_stay_out_of_the_code():
    import re

    hits = [f"{p.relative_to(PKG)}:{i + 1}" for p in PKG.rglob("*.py")
            for i, line in enumerate(p.read_text().splitlines()) if re.search(r"issue #?\d+", line)]
    assert not hits, f"issue numbers in code comments: {hits}"
