"""Render every measured number of the docs from the results files.

docs/benchmarks.md is rendered whole from ``benchmarks/templates/benchmarks.md``;
README.md and docs/cluster.md contain rendered regions, each between

    <!-- rendered from benchmarks/templates/NAME.md by benchmarks/render_docs.py: do not edit -->
    <!-- end of rendered region -->

A template is Markdown with placeholders ``{{ name }}`` or ``{{ name:spec }}``
(a format spec, e.g. ``{{ eval.S.streamae-one-pass.seconds:.3f }}``); the
names and their values come from the JSON files in benchmarks/results/
(`context`). An unknown name is an error, so a template cannot show a number
no results file holds.

Usage::

    python benchmarks/render_docs.py            # rewrite the docs
    python benchmarks/render_docs.py --check    # exit 1 when a doc differs from its rendering
"""

import argparse
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import doc_context  # noqa: E402

TEMPLATES = os.path.join(HERE, "templates")
WHOLE = {"docs/benchmarks.md": "benchmarks.md",  # doc -> template rendered whole
         "docs/tutorial.md": "tutorial.md"}
REGION_BEGIN = ("<!-- rendered from benchmarks/templates/{} by benchmarks/render_docs.py: "
                "do not edit -->")
REGION_END = "<!-- end of rendered region -->"
REGIONS = {"README.md": ["readme-features.md"],
           "docs/cluster.md": ["cluster-traffic.md", "cluster-overhead.md", "cluster-10tb.md"]}
PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z0-9_.\-/]+)\s*(?::([^}]*))?\}\}")


class RenderError(Exception):
    """A template names a value that no results file gives."""


def fill(template, values, where):
    """``template`` with every placeholder replaced by its formatted value."""
    def one(match):
        name, spec = match.group(1), (match.group(2) or "").strip()
        if name not in values:
            raise RenderError(f"{where}: no value named {name!r} (from the results files)")
        try:
            return format(values[name], spec) if spec else str(values[name])
        except (TypeError, ValueError) as exc:
            raise RenderError(f"{where}: {name!r} with format {spec!r}: {exc}") from None

    text = PLACEHOLDER.sub(one, template)
    if "{{" in text:
        line = text[:text.index("{{")].count("\n") + 1
        raise RenderError(f"{where}: a placeholder that is not one (line {line} of the output)")
    return text


def _read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def template(name):
    return _read(os.path.join(TEMPLATES, name))


def replace_region(text, name, body, doc):
    """``text`` with the rendered region of template ``name`` replaced by ``body``."""
    begin = REGION_BEGIN.format(name)
    if begin not in text or REGION_END not in text.split(begin, 1)[1]:
        raise RenderError(f"{doc} has no region {begin!r} ... {REGION_END!r}")
    head, rest = text.split(begin, 1)
    tail = rest.split(REGION_END, 1)[1]
    return head + begin + "\n" + body.rstrip("\n") + "\n" + REGION_END + tail


def render(root=ROOT, values=None):
    """{doc path relative to root: rendered text} for every rendered doc."""
    values = doc_context.context(os.path.join(root, "benchmarks", "results"), root) \
        if values is None else values
    out = {doc: fill(template(name), values, name) for doc, name in WHOLE.items()}
    for doc, names in REGIONS.items():
        text = _read(os.path.join(root, doc))
        for name in names:
            text = replace_region(text, name, fill(template(name), values, name), doc)
        out[doc] = text
    return out


def stale(root=ROOT, rendered=None):
    """The docs whose committed text differs from their rendering."""
    rendered = render(root) if rendered is None else rendered
    return [doc for doc, text in rendered.items() if _read(os.path.join(root, doc)) != text]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true",
                   help="only compare: exit 1 naming each doc that differs from its rendering")
    args = p.parse_args(argv)
    try:
        rendered = render()
    except RenderError as exc:
        raise SystemExit(f"render_docs: {exc}") from None
    if args.check:
        bad = stale(ROOT, rendered)
        for doc in bad:
            print(f"{doc} differs from its rendering: run python benchmarks/render_docs.py "
                  "(and edit benchmarks/templates/, not the doc)", file=sys.stderr)
        return 1 if bad else 0
    for doc, text in rendered.items():
        with open(os.path.join(ROOT, doc), "w", encoding="utf-8") as f:
            f.write(text)
        print(f"rendered {doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
