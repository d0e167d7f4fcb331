"""Every code example the user reads runs: ``>>>`` examples in docstrings and ```` ```python ```` blocks
in README.md and docs/.

Docstring examples run as doctests (ELLIPSIS and NORMALIZE_WHITESPACE), so their printed values are
checked too. A Markdown block runs in a fresh namespace in a temporary working directory and fails on
any exception. An HTML comment on the line before a block changes that:

* ``<!-- doc-example: continues -->``: run in the namespace the previous block of the page left;
* ``<!-- doc-example: slow -->``: mark the block's test slow (it still runs in CI);
* ``<!-- doc-example: skip: REASON -->``: do not run it; the reason is required and is reported.

Blocks that only include a file (``--8<-- "examples/…"``) are the example scripts, which
``tests/test_examples.py`` runs.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil
import re
from pathlib import Path

import pytest
import torch

import diffrecon

ROOT = Path(__file__).resolve().parents[1]
MARKDOWN = sorted([ROOT / "README.md", *ROOT.glob("docs/*.md"), *ROOT.glob("docs/*/*.md")])
_FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.S | re.M)
_MARKER = re.compile(r"<!--\s*doc-example:\s*(continues|slow|skip)\s*(?::\s*(.*?))?\s*-->\s*$")
_SNIPPET = re.compile(r"^\s*--8<--")


def _modules() -> list[str]:
    names = [diffrecon.__name__]
    for info in pkgutil.walk_packages(diffrecon.__path__, prefix="diffrecon."):
        names.append(info.name)
    return sorted(names)


def _doctests():
    finder = doctest.DocTestFinder(exclude_empty=True)
    tests = []
    for name in _modules():
        # the finder only descends into objects defined in the module, so re-exports are not repeated
        tests += [t for t in finder.find(importlib.import_module(name), name) if t.examples]
    return sorted(tests, key=lambda t: t.name)


DOCTESTS = _doctests()


def test_docstring_examples_are_found():
    # guards against the collection silently finding nothing (the suite below would then pass vacuously)
    names = {t.name.rsplit(".", 1)[0] for t in DOCTESTS} | {t.name for t in DOCTESTS}
    assert len(DOCTESTS) >= 10, [t.name for t in DOCTESTS]
    for expected in ("diffrecon.recon.diffusion.dds.DDS", "diffrecon.recon.dds2m.DDS2M",
                     "diffrecon.operators.cone.ConeBeam3D"):
        assert expected in names, sorted(names)


@pytest.mark.parametrize("test", DOCTESTS, ids=[t.name for t in DOCTESTS])
def test_docstring_example(test, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    test.globs.setdefault("torch", torch)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    failures = []
    runner.run(test, out=failures.append, clear_globs=False)
    assert runner.failures == 0, "".join(failures)


def _markdown_blocks():
    """(page, index, code, marker, reason) for every python block of every page, in page order."""
    blocks = []
    for page in MARKDOWN:
        text = page.read_text(encoding="utf-8")
        for i, m in enumerate(_FENCE.finditer(text)):
            code = m.group(1)
            if all(_SNIPPET.match(line) or not line.strip() for line in code.splitlines()):
                continue
            before = text[: m.start()].rstrip("\n").rsplit("\n", 1)[-1]
            marker = _MARKER.search(before)
            kind, reason = (marker.group(1), marker.group(2)) if marker else (None, None)
            if kind == "skip" and not reason:
                raise ValueError(f"{page.relative_to(ROOT)} block {i}: 'doc-example: skip' needs a reason")
            blocks.append((page.relative_to(ROOT).as_posix(), i, code, kind, reason))
    return blocks


BLOCKS = _markdown_blocks()


def _chains():
    """Blocks grouped into tests: a "continues" block runs in the same test as the blocks before it."""
    chains = []
    for page, i, code, kind, reason in BLOCKS:
        if kind == "continues":
            if not chains or chains[-1]["page"] != page:
                raise ValueError(f"{page} block {i} continues, but no block before it on the page")
            chains[-1]["blocks"].append((i, code))
            continue
        chains.append({"page": page, "blocks": [(i, code)], "kind": kind, "reason": reason})
    params = []
    for c in chains:
        marks = []
        if c["kind"] == "slow":
            marks.append(pytest.mark.slow)
        if c["kind"] == "skip":
            marks.append(pytest.mark.skip(reason=f"doc example marked skip: {c['reason']}"))
        ids = "+".join(str(i) for i, _ in c["blocks"])
        params.append(pytest.param(c["page"], c["blocks"], marks=marks, id=f"{c['page']}#{ids}"))
    return params


def test_markdown_examples_are_found():
    pages = {page for page, *_ in BLOCKS}
    assert len(BLOCKS) >= 10 and {"docs/quickstart.md", "docs/diffusion-mbir-dds.md"} <= pages, pages
    runnable = [b for b in BLOCKS if b[3] != "skip"]
    assert len(runnable) >= 0.8 * len(BLOCKS), "most documentation examples must run"


@pytest.mark.parametrize(("page", "blocks"), _chains())
def test_markdown_example(page, blocks, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": f"doc_example_{blocks[0][0]}"}
    threads = torch.get_num_threads()
    try:
        for index, code in blocks:
            exec(compile(code, f"{page}#{index}", "exec"), namespace)
    finally:
        torch.set_num_threads(threads)  # examples that pin threads must not slow the rest of the suite
