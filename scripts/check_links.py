#!/usr/bin/env python3
"""Checks every relative link in README.md and docs/*.md (python3, standard library only).

For each link `[text](target)`, image `![alt](target)`, reference definition
`[label]: target` and HTML `href="..."` / `src="..."` outside fenced code blocks and
inline code spans:

- the target file (or folder) exists, relative to the file that links to it;
- a `#anchor` (in the same file, or in another .md file) names a heading there, by
  GitHub's rule: the heading's text, lowercased, without punctuation other than hyphens
  and underscores, spaces turned into hyphens, and `-1`, `-2`, ... added to repeated
  headings; an explicit `<a id="...">` or `<a name="...">` also counts.

Links with a scheme (http, https, mailto, ...) are not checked. Exits 1 with the list of
broken links, 0 when all resolve.

Usage: python3 scripts/check_links.py [FILE.md ...]   (default: README.md docs/*.md)
"""

import re
import sys
import unicodedata
from pathlib import Path
from urllib.parse import unquote

ROOT = Path(__file__).resolve().parent.parent

FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
ATX = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
SETEXT = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
INLINE_CODE = re.compile(r"(`+)(.+?)\1")
# [text](target "title") and ![alt](target); the text may hold one level of brackets.
INLINE_LINK = re.compile(
    r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*(<[^>\n]*>|(?:[^()\s]|\([^()\s]*\))*)(?:\s+(?:\"[^\"]*\"|'[^']*'|\([^)]*\)))?\s*\)"
)
REFERENCE_DEF = re.compile(r"^ {0,3}\[[^\]]+\]:\s*(<[^>]*>|\S+)")
HTML_ATTR = re.compile(r"<(?:a|img)\b[^>]*?\b(?:href|src)\s*=\s*(\"[^\"]*\"|'[^']*'|[^\s>]+)", re.I)
HTML_ANCHOR = re.compile(r"<a\b[^>]*?\b(?:id|name)\s*=\s*(\"[^\"]*\"|'[^']*'|[^\s>]+)", re.I)
SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
HTML_TAG = re.compile(r"<[^>]+>")


def slug(text):
    """GitHub's anchor for a heading's text (as github-slugger computes it)."""
    text = text.strip().lower()
    kept = []
    for ch in text:
        cat = unicodedata.category(ch)
        if ch in " -" or cat[0] in "LMN" or cat == "Pc":
            kept.append(ch)
    return "".join(kept).replace(" ", "-")


def heading_text(raw):
    """The text GitHub renders for a heading's Markdown source."""
    text = INLINE_CODE.sub(lambda m: m.group(2).strip(), raw)
    text = re.sub(r"!?\[((?:[^\[\]]|\[[^\[\]]*\])*)\]\([^)]*\)", r"\1", text)  # links -> text
    text = HTML_TAG.sub("", text)
    text = re.sub(r"(\*\*|__|\*|~~)", "", text)
    return text


def outside_fences(lines):
    """(line number, line) for every line outside fenced code blocks."""
    fence = None
    for number, line in enumerate(lines, 1):
        m = FENCE.match(line)
        if fence is None:
            if m:
                fence = m.group(1)
                continue
            yield number, line
        elif m and m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence) \
                and line.strip() == m.group(1):
            fence = None


def anchors_of(path, cache={}):
    """Every anchor a Markdown file defines: heading slugs (with -1, -2 ... for
    repeats) and explicit <a id/name>."""
    if path in cache:
        return cache[path]
    lines = path.read_text(encoding="utf-8").splitlines()
    found, seen = set(), {}

    def add_heading(raw):
        base = slug(heading_text(raw))
        n = seen.get(base, 0)
        seen[base] = n + 1
        found.add(base if n == 0 else f"{base}-{n}")

    previous = None  # the previous line, when it could be a setext heading's text
    for _, line in outside_fences(lines):
        for m in HTML_ANCHOR.finditer(line):
            found.add(m.group(1).strip("\"'"))
        m = ATX.match(line)
        if m:
            add_heading(m.group(2) or "")
            previous = None
            continue
        if previous is not None and SETEXT.match(line) and line.strip():
            add_heading(previous)
            previous = None
            continue
        stripped = line.strip()
        paragraph_text = stripped and not stripped.startswith(("|", ">", "-", "*", "+", "<")) \
            and not re.match(r"^\d+[.)]\s", stripped) and not line.startswith("    ")
        previous = stripped if paragraph_text else None
    cache[path] = found
    return found


def links_of(path):
    """(line number, target) for every link in a Markdown file."""
    lines = path.read_text(encoding="utf-8").splitlines()
    for number, line in outside_fences(lines):
        code_free = INLINE_CODE.sub(lambda m: " " * len(m.group(0)), line)
        for m in INLINE_LINK.finditer(code_free):
            yield number, m.group(1).strip("<>")
        m = REFERENCE_DEF.match(code_free)
        if m:
            yield number, m.group(1).strip("<>")
        for m in HTML_ATTR.finditer(code_free):
            yield number, m.group(1).strip("\"'")


def check(path):
    """The broken links of one file, as messages."""
    broken = []
    for number, target in links_of(path):
        if not target or SCHEME.match(target):
            continue
        where = f"{path.relative_to(ROOT)}:{number}: ({target})"
        file_part, _, anchor = target.partition("#")
        file_part = unquote(file_part.split("?", 1)[0])
        dest = (path.parent / file_part).resolve() if file_part else path
        if not dest.exists():
            broken.append(f"{where}: no such file {file_part}")
            continue
        if not anchor:
            continue
        if dest.is_dir():
            broken.append(f"{where}: #{anchor} on a folder")
        elif dest.suffix.lower() in (".md", ".markdown"):
            if unquote(anchor) not in anchors_of(dest):
                broken.append(f"{where}: no heading or anchor #{anchor} in {dest.relative_to(ROOT)}")
    return broken


def main(argv):
    files = [Path(a).resolve() for a in argv] if argv else \
        [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    broken, count = [], 0
    for f in files:
        count += sum(1 for _, t in links_of(f) if t and not SCHEME.match(t))
        broken += check(f)
    if broken:
        print(f"broken links ({len(broken)}):", file=sys.stderr)
        for b in broken:
            print(f"  {b}", file=sys.stderr)
        return 1
    print(f"ok: {count} relative links in {len(files)} files")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
