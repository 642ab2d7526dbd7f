"""The code blocks of the Markdown documentation, and how the tests run them.

Every fenced block of README.md and docs/*.md that a user would run is run by
``tests/test_docs.py``, page by page, in order, in one scratch folder per page:

- ```` ```bash ```` and ```` ```sh ```` blocks with ``bash -e -o pipefail``;
- ```` ```python ```` blocks with the Python that runs the tests, each in a
  fresh process;
- ``text`` blocks written as a shell session (each command on a line starting
  with ``$ ``, followed by what it prints) are run command by command, and
  each line shown must be printed (stdout or stderr; ``...`` at the end of a
  line stands for the rest of it);
- other blocks (``text`` output, ``json``, ...) are not run.

Two HTML comments, alone on the line before a block, steer this (they do not
show on the rendered page):

- ``<!-- docs-test: skip REASON -->``: do not run the next block (installing
  packages, a real cluster, an hour-long benchmark); the reason is required.
- ``<!-- docs-test: setup COMMAND -->``: run the bash COMMAND here first, for
  an input the page assumes (``data.zarr``); it may stand anywhere.
- ``<!-- docs-test: needs MODULE -->``: the page runs only where MODULE can be
  imported (an optional dependency such as scikit-learn); it may stand anywhere.
- ``<!-- docs-test: slow REASON -->``: the page runs only with ``pytest -m slow``
  (minutes even on small counts); it may stand anywhere.

A bash block whose last line is ``cd DIR`` (the tutorial's ``mkdir -p DIR && cd
DIR``) moves the blocks after it into DIR, as it would in the reader's shell.

Small counts: before a block runs, `small` caps ``--max-iter`` at `MAX_ITER`,
``--count`` at `COUNT` and ``--repeats`` at `REPEATS` (``max_iter=`` and
``count=`` in Python), and adds ``--max-iter`` / ``--count`` to the commands of
`APPEND` that do not give them, so that each page runs in seconds. Outputs
and their names are otherwise exactly the documented ones.
"""

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
RUN = {"bash": "bash", "sh": "bash", "python": "python"}

MAX_ITER, COUNT, REPEATS = 20, 2000, 2
CAPS = {"--max-iter": MAX_ITER, "--count": COUNT, "--repeats": REPEATS}
KEYWORD_CAPS = {"max_iter": MAX_ITER, "count": COUNT}
# Commands whose defaults are large: the flags they get when they do not give them.
APPEND = {
    "streamae train": ("--max-iter",),
    "streamae demo": ("--max-iter",),
    "streamae patches": ("--count",),
    "examples/self_taught_digits.py": ("--max-iter", "--repeats"),
}

_FENCE = re.compile(r"^```(\w*)\s*$")
_MARKER = re.compile(r"^<!--\s*docs-test:\s*(skip|setup|needs|slow)\b\s*(.*?)\s*-->\s*$")


@dataclass
class Block:
    """One fenced block (or setup command) of a page."""

    page: Path
    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    skip: str = None  # the reason, for a skipped block

    @property
    def session(self):
        """True for a ``text`` block that shows shell commands (``$ ...``) and their output."""
        return self.lang == "text" and self.code.startswith("$ ")

    @property
    def runs(self):
        return self.skip is None and (self.lang in RUN or self.session)

    def where(self):
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def blocks(page):
    """Every fenced block and setup command of ``page``, in order."""
    lines = Path(page).read_text(encoding="utf-8").splitlines()
    found, pending_skip, i = [], None, 0
    while i < len(lines):
        marker = _MARKER.match(lines[i])
        fence = _FENCE.match(lines[i])
        if marker and marker.group(1) == "setup":
            found.append(Block(Path(page), i + 1, "bash", marker.group(2)))
        elif marker and marker.group(1) in ("needs", "slow"):
            pass  # see needs() and slow()
        elif marker:
            pending_skip = marker.group(2) or "(no reason given)"
        elif fence:
            end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
            found.append(Block(Path(page), i + 1, fence.group(1),
                               "\n".join(lines[i + 1:end]) + "\n", pending_skip))
            pending_skip, i = None, end
        elif lines[i].strip():
            pending_skip = None  # a marker applies to the block right after it
        i += 1
    return found


def needs(page):
    """The modules ``page`` needs (its ``docs-test: needs`` lines)."""
    text = Path(page).read_text(encoding="utf-8")
    return re.findall(r"^<!--\s*docs-test:\s*needs\s+(\S+)\s*-->", text, re.M)


def slow(page):
    """Whether ``page`` is marked ``docs-test: slow``."""
    text = Path(page).read_text(encoding="utf-8")
    return re.search(r"^<!--\s*docs-test:\s*slow\b", text, re.M) is not None


def _cap(match, cap):
    value = int(match.group(2).replace("_", ""))
    return f"{match.group(1)}{min(value, cap)}"


def small(block):
    """The code of ``block`` with the small counts of the module notes."""
    code = block.code
    if block.lang == "python":
        for name, cap in KEYWORD_CAPS.items():
            code = re.sub(rf"(\b{name}=)(\d[\d_]*)", lambda m, c=cap: _cap(m, c), code)
        return code
    code = code.replace("\\\n", " ")  # one line per command
    for flag, cap in CAPS.items():
        code = re.sub(rf"({flag}[ =])(\d[\d_]*)", lambda m, c=cap: _cap(m, c), code)
    return "\n".join(_append_flags(line) for line in code.splitlines()) + "\n"


def _append_flags(line):
    command, comment = re.match(r"^(.*?)(\s+#.*)?$", line).groups()
    for name, flags in APPEND.items():
        if name in command:
            for flag in flags:
                if flag not in command:
                    command += f" {flag} {CAPS[flag]}"
    return command + (comment or "")


def moved_to(block, folder):
    """The folder the blocks after ``block`` run in: ``folder``, or DIR below it when
    the block's last command changes directory (``cd DIR``)."""
    if block.lang not in ("bash", "sh"):
        return folder
    last = block.code.strip().splitlines()[-1] if block.code.strip() else ""
    match = re.search(r"(?:^|&&|;)\s*cd\s+(\S+)\s*$", last)
    return Path(folder) / match.group(1) if match else folder


def scratch(folder):
    """Prepare ``folder`` for a page: the repository's examples/ beside it, as in
    a clone (the tutorial runs ``python examples/sample_photos.py``)."""
    os.symlink(ROOT / "examples", Path(folder) / "examples")


def environment():
    """The environment of a block: this Python and its ``streamae`` first on PATH,
    this checkout's streamae importable, no display."""
    env = dict(os.environ)
    bindir = os.path.dirname(sys.executable)
    env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(
        os.pathsep)
    env["MPLBACKEND"] = "Agg"
    return env


def check_session(block, folder, timeout=900):
    """Run the commands of a session block; the lines it shows that were not printed."""
    missing, command, shown = [], None, []

    def check():
        if command is None:
            return
        done = run(Block(block.page, block.line, "bash", command + "\n"), folder, timeout)
        printed = (done.stdout + done.stderr).splitlines()
        for line in shown:
            stem = line[:-3] if line.endswith("...") else None
            if not any(p == line or (stem and p.startswith(stem)) for p in printed):
                missing.append(f"$ {command}\n  shows: {line}\n  printed: {printed}")

    for line in block.code.splitlines():
        if line.startswith("$ "):
            check()
            command, shown = line[2:], []
        elif line.strip():
            shown.append(line)
    check()
    return missing


def run(block, folder, timeout=900):
    """Run ``block`` (small counts) in ``folder``; CompletedProcess."""
    code = small(block)
    if RUN[block.lang] == "python":
        argv, stdin = [sys.executable, "-"], code
    else:
        argv, stdin = [shutil.which("bash") or "bash", "-e", "-o", "pipefail", "-c", code], None
    return subprocess.run(argv, input=stdin, cwd=folder, env=environment(), text=True,
                          capture_output=True, timeout=timeout)
