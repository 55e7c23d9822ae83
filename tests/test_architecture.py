"""The layer picture of docs/architecture.md, kept true.

Reads every module of the package with ``ast`` (nothing is imported, so the test is quick and sees imports inside
functions too) and fails on an import circle, on an import from a lower layer to a higher one, on an import between
two sibling layers of the same rank, and on a module that has outgrown one job.
"""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / 'aesweep'

# The layers, lowest first; a module may import its own layer and any layer of a lower rank. `data` and `models`
# share rank 2 and may not import each other: a model never reads files and a loader never builds a net.
LAYER_RANK = {
    'registry': 0,
    'spec': 1,
    'data': 2,
    'models': 2,
    'evaluation': 3,
    'training': 4,
    'service': 5,
    'report': 6,
    'cli': 7,
    '__main__': 8,  # `python -m aesweep` only calls the CLI
}
# A module may exceed this only by the slack the issue allows ("no module over ~600 lines").
MAX_MODULE_LINES = 650


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix('').parts)
    if parts[-1] == '__init__':
        parts.pop()
    return '.'.join(parts)


def layer_of(module: str) -> str:
    parts = module.split('.')
    return parts[1] if len(parts) > 1 else 'package'


def own_imports(path: Path) -> set[str]:
    """The aesweep modules ``path`` imports, anywhere in it (top level or inside functions)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    importer = module_name(path)
    package = importer if path.name == '__init__.py' else importer.rpartition('.')[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.split('.')[0] == 'aesweep')
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split('.')
                base = base[:len(base) - node.level + 1]
                target = '.'.join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ''
            if target.split('.')[0] != 'aesweep':
                continue
            # `from aesweep.spec import load` names a module; `from aesweep.spec.load import load_spec` a name.
            for alias in node.names:
                candidate = f'{target}.{alias.name}'
                found.add(candidate if candidate in MODULES else target)
    found.discard(importer)
    return {name for name in found if name in MODULES}


MODULE_PATHS = {module_name(path): path for path in sorted(PACKAGE.rglob('*.py'))}
MODULES = set(MODULE_PATHS)
GRAPH = {name: own_imports(path) for name, path in MODULE_PATHS.items()}


def test_every_layer_of_the_package_has_a_rank():
    layers = {layer_of(name) for name in MODULES} - {'package'}
    assert layers <= set(LAYER_RANK), f'layers without a rank in this test: {sorted(layers - set(LAYER_RANK))}'
    assert len(MODULES) > 40  # the walk found the package, not an empty folder


def test_no_import_reaches_up_or_sideways():
    wrong = []
    for importer, imported in GRAPH.items():
        for target in imported:
            source_layer, target_layer = layer_of(importer), layer_of(target)
            if 'package' in (source_layer, target_layer) or source_layer == target_layer:
                continue
            if LAYER_RANK[target_layer] >= LAYER_RANK[source_layer]:
                wrong.append(f'{importer} ({source_layer}) imports {target} ({target_layer})')
    assert not wrong, '\n'.join(sorted(wrong))


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle of ``graph`` as a path that starts and ends at the same module, or None."""
    visiting, done = set(), set()
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        visiting.add(node)
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if target in visiting:
                return stack[stack.index(target):] + [target]
            if target not in done:
                cycle = visit(target)
                if cycle:
                    return cycle
        visiting.discard(node)
        done.add(node)
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in done:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_no_import_circle():
    cycle = find_cycle(GRAPH)
    assert cycle is None, 'import circle: ' + ' -> '.join(cycle)


def test_the_cycle_finder_sees_a_circle():
    # The check above is only as good as this finder: a circle hidden two steps deep must be reported.
    assert find_cycle({'a': {'b'}, 'b': {'c'}, 'c': {'a'}, 'd': {'a'}}) == ['a', 'b', 'c', 'a']
    assert find_cycle({'a': {'b'}, 'b': {'c'}, 'c': set()}) is None


def test_the_import_reader_sees_imports_inside_functions():
    # The graph would be blind to a circle hidden behind a function-level import; the CLI is full of them.
    cli = GRAPH['aesweep.cli']
    assert 'aesweep.service.driver' in cli and 'aesweep.report.assemble' in cli


def test_no_module_outgrows_one_job():
    sizes = {name: len(path.read_text().splitlines()) for name, path in MODULE_PATHS.items()}
    oversize = {name: lines for name, lines in sizes.items() if lines > MAX_MODULE_LINES}
    assert not oversize, f'split these by job: {oversize}'
