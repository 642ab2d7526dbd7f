"""Docs that cannot drift: every code block of README.md and docs/*.md runs (on
small counts, see tests/docs_blocks.py), links resolve, and the documentation
site with its generated API reference builds without a warning."""

import os
import re
import subprocess
import sys

import docs_blocks
import pytest
from docs_blocks import PAGES, ROOT, Block, blocks, small

RUNNABLE = [pytest.param(page, id=page.name,
                         marks=[pytest.mark.slow] if docs_blocks.slow(page) else [])
            for page in PAGES if any(b.runs for b in blocks(page))]


@pytest.mark.parametrize("page", RUNNABLE)
def test_every_block_of_the_page_runs(page, tmp_path):
    for module in docs_blocks.needs(page):
        pytest.importorskip(module)
    docs_blocks.scratch(tmp_path)
    folder = tmp_path
    for block in blocks(page):
        if not block.runs:
            continue
        if block.session:
            missing = docs_blocks.check_session(block, folder)
            assert not missing, f"{block.where()}:\n" + "\n".join(missing)
            continue
        before = _listing(folder)
        _run_block(block, folder)
        if page.name == "README.md" and _listing(folder) != before:
            _run_block(block, folder)  # every README block can be run again as it is
        folder = docs_blocks.moved_to(block, folder)
    if folder != tmp_path:  # the page made a folder of its own: nothing was left outside
        assert sorted(os.listdir(tmp_path)) == sorted(["examples", folder.name]), page.name


def _listing(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def _run_block(block, folder):
    done = docs_blocks.run(block, folder)
    assert done.returncode == 0, (
        f"{block.where()} ({block.lang}) failed with status {done.returncode}:\n"
        f"{small(block)}\n--- stdout\n{done.stdout[-3000:]}\n--- stderr\n"
        f"{done.stderr[-3000:]}")


def test_the_tutorial_starts_in_a_folder_of_its_own():
    """Run from any directory (a checkout included), the tutorial writes only inside
    the folder its first command makes."""
    first = next(b for b in blocks(ROOT / "docs" / "tutorial.md") if b.runs)
    assert first.code.strip() == "mkdir -p streamae-tutorial && cd streamae-tutorial"
    assert str(docs_blocks.moved_to(first, ROOT)).endswith("streamae-tutorial")


def test_the_tutorial_runs_end_to_end_with_distinct_outputs():
    """The tutorial's commands write each output once (no --overwrite needed)."""
    page = ROOT / "docs" / "tutorial.md"
    runs = [b for b in blocks(page) if b.runs]
    assert len(runs) >= 8
    outputs = []
    for block in runs:
        if block.lang == "python":
            outputs += re.findall(r"""(?:save|out=)\(?["']([^"']+)["']""", block.code)
            continue
        for line in small(block).splitlines():
            line = line.split(" #")[0]
            words = line.split()
            if words[:1] != ["streamae"] or len(words) < 2:
                continue
            if "--out" in words:
                outputs.append(words[words.index("--out") + 1])
            elif words[1] in ("patches", "import"):
                outputs.append(words[2 if words[1] == "patches" else 3])
            elif words[1] == "encode":
                outputs.append(words[4])
            assert "--overwrite" not in words, line
    assert len(outputs) == len(set(outputs)) >= 6, outputs


def test_every_skipped_block_says_why():
    for page in PAGES:
        for block in blocks(page):
            if block.skip is not None:
                assert len(block.skip) > 10 and block.skip != "(no reason given)", \
                    block.where()


@pytest.mark.parametrize("code, expected", [
    ("streamae train x.zarr --out m.zarr\n", "streamae train x.zarr --out m.zarr --max-iter 20\n"),
    ("streamae train x.zarr --max-iter 400 \\\n    --out m.zarr  # train\n",
     "streamae train x.zarr --max-iter 20      --out m.zarr  # train\n"),
    ("streamae patches p.zarr --builtin --count 100000\n",
     "streamae patches p.zarr --builtin --count 2000\n"),
    ("streamae demo\n", "streamae demo --max-iter 20\n"),
    ("streamae train x.zarr --out m.zarr --max-iter 3\n",
     "streamae train x.zarr --out m.zarr --max-iter 3\n"),
])
def test_small_counts_in_shell_blocks(code, expected):
    assert small(Block(ROOT, 1, "bash", code)) == expected


def test_small_counts_in_python_blocks():
    code = 'ae.fit(X, max_iter=400)\nwrite_patches("p.zarr", count=100_000, size=8)\n'
    assert small(Block(ROOT, 1, "python", code)) == (
        'ae.fit(X, max_iter=20)\nwrite_patches("p.zarr", count=2000, size=8)\n')


def test_markers(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("<!-- docs-test: setup touch x -->\n\n"
                    "<!-- docs-test: skip needs a cluster -->\n"
                    "```bash\nexit 1\n```\n\n```python\nprint(1)\n```\n\n```text\nout\n```\n")
    found = blocks(page)
    assert [(b.lang, b.code, b.skip, b.runs) for b in found] == [
        ("bash", "touch x", None, True), ("bash", "exit 1\n", "needs a cluster", False),
        ("python", "print(1)\n", None, True), ("text", "out\n", None, False)]


_LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def test_relative_links_resolve():
    for page in PAGES:
        for target in _LINK.findall(page.read_text(encoding="utf-8")):
            if "://" in target or target.startswith("mailto:"):
                continue
            assert (page.parent / target).exists(), f"{page.name}: broken link {target}"


def test_the_site_builds_without_warnings(tmp_path):
    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocstrings")
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q",
                           "-f", str(ROOT / "mkdocs.yml"), "-d", str(tmp_path / "site")],
                          cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    api = (tmp_path / "site" / "api" / "index.html").read_text(encoding="utf-8")
    # Generated from the docstrings: parameters that only the docstrings hold.
    for text in ("SparseAutoencoder", "checkpoint_every", "write_patches", "scale_from",
                 "TrainingInterrupted"):
        assert text in api, text


def test_usage_lines_of_the_cli_page_match_the_parser():
    from streamae.cli import build_parser

    parser = build_parser()
    commands = parser.commands
    checked = set()
    for block in blocks(ROOT / "docs" / "cli.md"):
        found = re.match(r"streamae (?:(\w+) )?\[-h\]", block.code)
        if block.lang != "text" or not found:
            continue
        command = found.group(1)
        usage = (commands[command] if command else parser).format_usage()
        assert block.code.split() == usage.removeprefix("usage: ").split(), block.where()
        checked.add(command)
    assert checked >= {None, *commands} - {"help"}
