"""The import graph: layers only import downwards, no module cycle, no binary imports a binary.

Layers, top to bottom: experiments (binaries and the libraries they share) -> data_pipeline
(datasets, targets) -> kdc_tf (library, serving). Read from the source with `ast`, every import
counted, also those inside functions.
"""

import ast
import pathlib
from typing import Dict, List, Set

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = ("kdc_tf", "data_pipeline", "experiments")
# A package may import only the packages listed for it.
ALLOWED = {
    "kdc_tf": {"kdc_tf"},
    "data_pipeline": {"kdc_tf", "data_pipeline"},
    "experiments": {"kdc_tf", "data_pipeline", "experiments"},
}


def _module_name(path: pathlib.Path) -> str:
  parts = list(path.relative_to(ROOT).with_suffix("").parts)
  if parts[-1] == "__init__":
    parts.pop()
  return ".".join(parts)


def _sources() -> Dict[str, ast.Module]:
  return {_module_name(path): ast.parse(path.read_text(), str(path))
          for package in PACKAGES for path in sorted((ROOT / package).rglob("*.py"))}


SOURCES = _sources()


def _imports(tree: ast.Module) -> Set[str]:
  """Project modules a module imports (a submodule when `from package import submodule`)."""
  found = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      found.update(alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      for alias in node.names:
        submodule = f"{node.module}.{alias.name}"
        found.add(submodule if submodule in SOURCES else node.module)
  return {name for name in found if name.split(".")[0] in PACKAGES}


GRAPH = {name: _imports(tree) for name, tree in SOURCES.items()}


def _is_binary(tree: ast.Module) -> bool:
  """Has an `if __name__ == "__main__":` block."""
  for node in tree.body:
    if isinstance(node, ast.If) and isinstance(node.test, ast.Compare):
      left = node.test.left
      if isinstance(left, ast.Name) and left.id == "__name__":
        return True
  return False


BINARIES = {name for name, tree in SOURCES.items() if _is_binary(tree)}


def test_the_graph_is_read():
  assert "kdc_tf.geometry" in GRAPH["kdc_tf.losses"]
  assert "kdc_tf.geometry" in GRAPH["data_pipeline.targets"]
  assert {"experiments.train", "experiments.oracle", "data_pipeline.create_tfrecords"} <= BINARIES


@pytest.mark.parametrize("package", PACKAGES)
def test_no_upward_import(package):
  upward = {f"{name} -> {target}" for name, targets in GRAPH.items()
            if name.split(".")[0] == package for target in targets
            if target.split(".")[0] not in ALLOWED[package]}
  assert not upward, f"{package} imports a layer above it: {sorted(upward)}"


def test_no_module_imports_a_binary():
  offenders = {f"{name} -> {target}" for name, targets in GRAPH.items() for target in targets
               if target in BINARIES}
  assert not offenders, f"binaries are entry points, not libraries: {sorted(offenders)}"


def _cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
  """Strongly connected components with more than one module (Tarjan), or a self-import."""
  index: Dict[str, int] = {}
  low: Dict[str, int] = {}
  stack: List[str] = []
  on_stack: Set[str] = set()
  components = []

  def visit(node: str) -> None:
    index[node] = low[node] = len(index)
    stack.append(node)
    on_stack.add(node)
    for target in graph.get(node, ()):
      if target not in index:
        visit(target)
        low[node] = min(low[node], low[target])
      elif target in on_stack:
        low[node] = min(low[node], index[target])
    if low[node] == index[node]:
      component = []
      while True:
        member = stack.pop()
        on_stack.discard(member)
        component.append(member)
        if member == node:
          break
      if len(component) > 1 or node in graph.get(node, ()):
        components.append(sorted(component))

  for node in sorted(graph):
    if node not in index:
      visit(node)
  return components


def test_no_import_cycle():
  assert not _cycles(GRAPH), f"import cycles: {_cycles(GRAPH)}"


def test_cycle_detection_finds_a_cycle():
  assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def _defines_flags_at_import(tree: ast.Module) -> bool:
  """A `flags.DEFINE_*` call among the module's top-level statements."""
  for statement in tree.body:
    if isinstance(statement, (ast.FunctionDef, ast.ClassDef, ast.If)):
      continue
    for node in ast.walk(statement):
      if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
          and node.func.attr.startswith("DEFINE")):
        return True
  return False


def test_no_module_defines_flags_when_imported():
  offenders = sorted(name for name, tree in SOURCES.items() if _defines_flags_at_import(tree))
  assert not offenders, f"define flags in define_flags(), called under __main__: {offenders}"
