"""docs/architecture.md's module map is the tree: every module of ``lib/prserv`` has
one line there, in the layer ``tests/test_layers.py`` puts it in, saying its one job.

A module added without a line, a line left for a module removed, a layer that
disagrees with ``LAYERS``, or a purpose that needs an "and" (two jobs: split the
module) fails here.  So does a module over ``MAX_LINES`` lines.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Dict, List, Tuple

from test_layers import LIB, layer_of, module_files

DOC = Path(__file__).resolve().parent.parent / "docs" / "architecture.md"
HEADING = "## Module map"
MAX_LINES = 700

_ROW = re.compile(r"^\|\s*`(?P<module>prserv[\w.]*)`\s*\|\s*(?P<layer>[\w-]+)\s*\|\s*(?P<job>.*?)\s*\|\s*$")


def map_rows(text: str) -> List[Tuple[str, str, str]]:
    """(module, layer, job) of each row of the map's table."""
    section = text.split(HEADING, 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        match = _ROW.match(line)
        if match:
            rows.append((match.group("module"), match.group("layer"), match.group("job")))
    return rows


def problems(rows: List[Tuple[str, str, str]], modules: Dict[str, Path]) -> List[str]:
    found = []
    listed: Dict[str, int] = {}
    for module, layer, job in rows:
        listed[module] = listed.get(module, 0) + 1
        if module not in modules:
            found.append("%s is in the map but not in lib/prserv" % module)
            continue
        expected = layer_of(module)[1]
        if layer != expected:
            found.append("%s is in layer %s, the map says %s" % (module, expected, layer))
        if not job:
            found.append("%s has no purpose in the map" % module)
        elif re.search(r"\band\b", job):
            found.append("%s: its purpose needs an 'and' (%r): two jobs, split the module" % (module, job))
    for module in sorted(modules):
        if module not in listed:
            found.append("%s has no line in the map (docs/architecture.md, %s)" % (module, HEADING))
    found += ["%s is in the map %d times" % (module, count) for module, count in listed.items() if count > 1]
    return found


def test_the_module_map_lists_every_module_in_its_layer_with_one_job():
    assert problems(map_rows(DOC.read_text(encoding="utf-8")), module_files()) == []


def test_the_map_check_fails_on_a_module_left_out_or_doing_two_jobs():
    modules = {"prserv.errors": Path("x"), "prserv.revision": Path("y")}
    rows = [("prserv.errors", "pure", "the exception tree"),
            ("prserv.revision", "pure", "revision arithmetic and parsing"),
            ("prserv.gone", "pure", "nothing")]
    assert problems(rows, modules) == [
        "prserv.revision: its purpose needs an 'and' ('revision arithmetic and parsing'): two jobs, split "
        "the module",
        "prserv.gone is in the map but not in lib/prserv"]
    assert problems(rows[:1], modules) == [
        "prserv.revision has no line in the map (docs/architecture.md, ## Module map)"]
    assert problems([("prserv.errors", "storage", "the exception tree")], {"prserv.errors": Path("x")}) == [
        "prserv.errors is in layer pure, the map says storage"]


def test_no_module_is_over_the_line_limit():
    long = {name: len(path.read_text(encoding="utf-8").splitlines()) for name, path in module_files(LIB).items()}
    assert {name: lines for name, lines in long.items() if lines > MAX_LINES} == {}


def test_readme_keeps_no_second_module_map():
    readme = (DOC.parent.parent / "README.md").read_text(encoding="utf-8")
    assert "docs/architecture.md" in readme
    assert "| `lib/prserv/storage/` |" not in readme
