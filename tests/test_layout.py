"""The package's layout: no import cycle among ovptq's modules (type-only and function-local imports counted too),
`ovptq.state` imports no stage, and the stages that measure the INT8 model live together in `ovptq.measuring`."""

import ast
from pathlib import Path

import networkx as nx

import ovptq

PACKAGE = Path(ovptq.__file__).parent


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> nx.DiGraph:
    """Module -> the ovptq modules it imports, from every import statement in its source."""
    modules = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph = nx.DiGraph()
    for name, path in modules.items():
        graph.add_node(name)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1] + [base]).strip(".")
                # `from package import module` imports the module; `from module import name` the module
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                           for alias in node.names]
            else:
                continue
            for target in targets:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    graph.add_edge(name, target)
    return graph


def test_no_import_cycle_type_only_imports_included():
    cycles = list(nx.simple_cycles(import_graph()))
    assert cycles == [], f"{len(cycles)} import cycles, e.g. {' -> '.join(min(cycles, key=len))}"


def test_the_state_imports_no_stage():
    graph = import_graph()
    stages = {"ovptq.smooth_quant", "ovptq.ranges.activations", "ovptq.ranges.weights", "ovptq.placement.placer",
              "ovptq.bias_correction.fast", "ovptq.bias_correction.full", "ovptq.rewrite.rewrite",
              "ovptq.measuring.safety_net", "ovptq.measuring.speed_check", "ovptq.measuring.accuracy_control"}
    assert not nx.descendants(graph, "ovptq.state") & stages


def test_the_measuring_stages_live_together():
    measuring = {path.stem for path in (PACKAGE / "measuring").glob("*.py")}
    assert {"trial", "safety_net", "speed_check", "accuracy_control", "measure"} <= measuring
    assert not (PACKAGE / "safety_net.py").exists() and not (PACKAGE / "speed_check.py").exists()
