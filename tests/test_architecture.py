"""The shape of the code: strategies are units of one registry, nothing else branches on their
names, bench/ has no import cycle, and the front door (compose, plan, validate, predict
memory) imports neither torch nor pandas."""
import ast
import os
import subprocess
import sys

import pytest

from bench import config, parallel
from bench.config import StrategyConfig
from conftest import ROOT

BENCH = os.path.join(ROOT, "bench")


def _modules() -> dict[str, str]:
    """bench module name -> file."""
    out = {}
    for dirpath, _, files in os.walk(BENCH):
        for f in files:
            if f.endswith(".py"):
                rel = os.path.relpath(os.path.join(dirpath, f), ROOT)[:-3].replace(os.sep, ".")
                out[rel.removesuffix(".__init__")] = os.path.join(dirpath, f)
    return out


def test_registry_and_strategy_configs_are_the_same_set():
    assert set(parallel.STRATEGIES) == set(config.options("strategy"))
    for name, unit in parallel.STRATEGIES.items():
        assert os.path.isfile(os.path.join(BENCH, "parallel", f"{name}.py")), f"the unit of {name} is {name}.py"
        assert unit.summary and type(unit).__module__ == f"bench.parallel.{name}"


@pytest.mark.parametrize("name", sorted(parallel.STRATEGIES))
def test_each_layout_uses_exactly_the_devices(name):
    unit = parallel.STRATEGIES[name]
    opts = StrategyConfig(name=name, tp=2, pp=1)  # hybrid: dp x tp
    for devices in (1, 2, 4, 8):
        if name == "single" and devices > 1 or name == "hybrid" and devices % 2:
            continue
        lay = unit.layout(devices, opts)
        assert lay.dp * lay.tp * lay.pp == devices
        assert devices % lay.devices_per_process == 0
        if lay.mesh is not None:
            assert [d for d, _ in lay.mesh][0] == ("dp" if lay.data_parallel else lay.mesh[0][0])
            assert sum(1 for _ in lay.mesh) <= 2


def _names_compared(tree: ast.AST, names: set[str]) -> list[int]:
    """Lines that compare something with a strategy name, or look one up by its literal name."""
    lines = []
    for node in ast.walk(tree):
        consts = []
        if isinstance(node, ast.Compare):
            consts = [c for c in [node.left, *node.comparators] if isinstance(c, ast.Constant)]
            for c in [node.left, *node.comparators]:
                if isinstance(c, (ast.Tuple, ast.List, ast.Set)):
                    consts += [e for e in c.elts if isinstance(e, ast.Constant)]
        elif isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):
            if "strateg" in ast.unparse(node.value).lower():  # STRATEGIES["mp"]
                consts = [node.slice]
        elif isinstance(node, ast.Subscript) and isinstance(node.value, ast.Dict):  # {"mp": ...}[name]
            consts = [k for k in node.value.keys if isinstance(k, ast.Constant)]
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)  # name.startswith("mp")
              and node.func.attr in ("startswith", "endswith") and "strateg" in ast.unparse(node.func.value).lower()):
            consts = [a for a in node.args if isinstance(a, ast.Constant)]
        if any(c.value in names for c in consts if isinstance(c.value, str)):
            lines.append(node.lineno)
    return lines


def test_nothing_outside_the_registry_branches_on_a_strategy_name():
    names = set(parallel.STRATEGIES) | {"ddp", "pipeline", "tensor"}
    found = {}
    for mod, path in _modules().items():
        if mod.startswith("bench.parallel"):
            continue
        lines = _names_compared(ast.parse(open(path).read()), names)
        if lines:
            found[mod] = lines
    assert not found, f"strategy names compared outside bench/parallel/: {found}"


def _imports(path: str, mod: str, modules: set[str]) -> set[str]:
    """bench modules `path` imports, at any depth (lazy imports count), TYPE_CHECKING aside:
    `from bench.x import y` is bench.x.y where that is a module, else bench.x."""
    tree = ast.parse(open(path).read())
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip |= {id(n) for n in ast.walk(node)}
    out = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("bench")}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("bench"):
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                out.add(sub if sub in modules else node.module)
    return out


def test_no_import_cycles_in_bench():
    mods = _modules()
    graph = {m: {i for i in _imports(p, m, set(mods)) if i in mods and i != m} for m, p in mods.items()}
    state: dict[str, int] = {}

    def visit(m, path):
        state[m] = 1
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                raise AssertionError("import cycle: " + " -> ".join(path + [m, n]))
            if n not in state:
                visit(n, path + [m])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [])
    assert "bench.worker" not in graph["bench.launch"] and "bench.launch" not in graph["bench.worker"]


def test_the_front_door_imports_neither_torch_nor_pandas():
    """Compose a sweep, plan every point (validation, layout), predict its memory and judge it:
    all before launching, none of it needs torch (a bad input answers at once)."""
    code = """
import sys
from bench import hardware
from bench.run import compose_points
from bench.memory import predict_memory
from bench.plan import Host, make_spec, check_memory, available_bytes
host = Host.from_fingerprint(hardware.fingerprint())
for _, cfg in compose_points(["size=tiny,small", "strategy=dp,mp,tp,fsdp", "devices=2", "accelerator=cpu"], True)[0]:
    spec = make_spec(cfg, host)
    check_memory(spec, predict_memory(spec), available_bytes(spec, host))
heavy = sorted(m for m in ("torch", "pandas", "numpy", "matplotlib") if m in sys.modules)
print(",".join(heavy) or "none")
"""
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "none"
