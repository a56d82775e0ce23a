"""Checks that no two files of shared/src import from each other, directly or round a
longer loop: every `crate::`, `super::`, `self::` and child-module path in a file (in
`use` items and inline, tests included) is mapped to the module file it names (the
longest module prefix; a re-exported item counts as the re-exporting file's), and every
circle in that file graph is reported with the lines that make it. Declaring a child
(`mod x;`) is not a use.

One kind of circle is allowed: a module's mod.rs (or a.rs beside a/) and its own direct
children using each other, as the parent declares and re-exports its parts and the parts
share its types (the `QuotaStore` trait in quota/mod.rs, its backends in quota/redis.rs
and quota/dynamodb.rs, the factory choosing one back in mod.rs). A circle with any other
arrow in it (siblings using each other, or any file outside the module) fails.
Exits 1 on any such circle.

Usage: python3 scripts/check_imports.py [--graph]   (from anywhere; stdlib only)
"""

import os
import re
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "shared", "src")

IDENT = r"(?:r#)?[A-Za-z_][A-Za-z0-9_]*"


def module_files(root):
    """{module path (tuple of names): file path relative to root}"""
    files = {}
    for directory, _, names in os.walk(root):
        for name in names:
            if not name.endswith(".rs"):
                continue
            rel = os.path.relpath(os.path.join(directory, name), root)
            parts = rel[: -len(".rs")].split(os.sep)
            if parts == ["lib"] or parts == ["main"]:
                parts = []
            elif parts[-1] == "mod":
                parts = parts[:-1]
            files[tuple(parts)] = rel
    return files


def strip(source):
    """The source with comments, string and char literals blanked (newlines kept), so
    braces and paths inside them are not read as code."""
    out = []
    i, n = 0, len(source)
    while i < n:
        c = source[i]
        if source.startswith("//", i):
            j = source.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i))
            i = j
        elif source.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if source.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif source.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            out.append(re.sub(r"[^\n]", " ", source[i:j]))
            i = j
        elif (m := re.match(r'b?r(#*)"', source[i:])) and (
            i == 0 or not (source[i - 1].isalnum() or source[i - 1] == "_")
        ):
            end = '"' + m.group(1)
            j = source.find(end, i + m.end())
            j = n if j < 0 else j + len(end)
            out.append(re.sub(r"[^\n]", " ", source[i:j]))
            i = j
        elif c == '"':
            j = i + 1
            while j < n and source[j] != '"':
                j += 2 if source[j] == "\\" else 1
            j += 1
            out.append(re.sub(r"[^\n]", " ", source[i:j]))
            i = j
        elif c == "'":
            # A char literal ('a', '\n', '\u{..}'), else a lifetime or label.
            m = re.match(r"'(?:\\(?:u\{[0-9a-fA-F]+\}|x[0-9a-fA-F]{2}|.)|[^\\'])'", source[i:])
            if m:
                out.append(" " * m.end())
                i += m.end()
            else:
                out.append(c)
                i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def expand_use(tree):
    """`a::{b, c::{d, e as f}, self}` -> [[a, b], [a, c, d], [a, c, e], [a]]"""
    tree = re.sub(r"\s+", "", tree)

    def parse(s, i, prefix):
        paths = []
        segs = list(prefix)
        while i < len(s):
            if s[i] == "{":
                i += 1
                while s[i] != "}":
                    sub, i = parse(s, i, segs)
                    paths.extend(sub)
                    if s[i] == ",":
                        i += 1
                return paths, i + 1
            m = re.match(r"(" + IDENT + r"|\*)", s[i:])
            if not m:
                break
            word = m.group(1)
            i += m.end()
            if s.startswith("as", i) and re.match(r"as" + IDENT, s[i:]):
                i += re.match(r"as" + IDENT, s[i:]).end()
            if word == "self":
                pass
            elif word != "*":
                segs.append(word)
            if s.startswith("::", i):
                i += 2
                continue
            break
        paths.append(segs)
        return paths, i

    paths, _ = parse(tree, 0, [])
    return paths


def references(module, code):
    """[(line, absolute module path as list)] for every path in `code` (stripped source of
    the file of `module`) that starts at crate, super, self or a child module."""
    refs = []
    line_of = lambda pos: code.count("\n", 0, pos) + 1  # noqa: E731

    # Inline modules (`mod tests { ... }`): where each starts and ends, so that `super::`
    # inside one is resolved from it.
    inline = []
    for m in re.finditer(r"\bmod\s+(" + IDENT + r")\s*\{", code):
        depth, j = 1, m.end()
        while j < len(code) and depth:
            depth += {"{": 1, "}": -1}.get(code[j], 0)
            j += 1
        inline.append((m.start(), j, m.group(1)))

    def scope(pos):
        mod = list(module)
        for start, end, name in inline:
            if start < pos < end:
                mod.append(name)
        return mod

    children = set(re.findall(r"\bmod\s+(" + IDENT + r")\s*;", code))

    def resolve(segs, pos):
        here = scope(pos)
        if not segs:
            return None
        head = segs[0]
        if head == "crate":
            return segs[1:]
        if head in ("super", "self"):
            base = list(here)
            rest = list(segs)
            while rest and rest[0] in ("super", "self"):
                if rest[0] == "super":
                    base = base[:-1]
                rest = rest[1:]
            return base + rest
        if head in children and len(here) == len(module):
            return list(module) + segs
        return None

    use_spans = []
    for m in re.finditer(r"\buse\s+([^;]*);", code):
        use_spans.append((m.start(), m.end()))
        for segs in expand_use(m.group(1)):
            target = resolve(segs, m.start())
            if target is not None:
                refs.append((line_of(m.start()), target))
    for m in re.finditer(r"(?<![A-Za-z0-9_:$])((?:crate|super|self)(?:::" + IDENT + r")+)", code):
        if any(s <= m.start() < e for s, e in use_spans):
            continue
        segs = m.group(1).split("::")
        target = resolve(segs, m.start())
        if target is not None:
            refs.append((line_of(m.start()), target))
    return refs


def file_of(target, files):
    """The file of the longest module prefix of `target`."""
    for k in range(len(target), -1, -1):
        if tuple(target[:k]) in files:
            return files[tuple(target[:k])]
    return None


def graph(root):
    files = module_files(root)
    edges = {}  # file -> {file: [lines]}
    for module, rel in sorted(files.items()):
        with open(os.path.join(root, rel), encoding="utf-8") as f:
            code = strip(f.read())
        out = edges.setdefault(rel, {})
        for line, target in references(module, code):
            dest = file_of(target, files)
            if dest and dest != rel:
                out.setdefault(dest, []).append(line)
    return edges


def cycles(edges):
    """Strongly connected components of more than one file (Tarjan)."""
    index, low, on, stack, comps = {}, {}, set(), [], []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(edges.get(v, {})):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                comps.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(edges):
        if v not in index:
            visit(v)
    return comps


def family(a, b, modules):
    """Whether one of the two files is the other's parent module (mod.rs or a.rs)."""
    ma, mb = modules[a], modules[b]
    return ma == mb[:-1] or mb == ma[:-1]


def path(edges, members, src, dest):
    """A shortest path of files from src to dest inside members (breadth first)."""
    prev, frontier = {src: None}, [src]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(edges.get(v, {})):
                if w in members and w not in prev:
                    prev[w] = v
                    nxt.append(w)
        frontier = nxt
    if dest not in prev:
        return None
    out = [dest]
    while out[0] != src:
        out.insert(0, prev[out[0]])
    return out


def main():
    edges = graph(ROOT)
    modules = {rel: module for module, rel in module_files(ROOT).items()}
    if "--graph" in sys.argv:
        for src in sorted(edges):
            for dest in sorted(edges[src]):
                print(f"{src} -> {dest}")
    failed = False
    for comp in cycles(edges):
        members = set(comp)
        # An arrow lies on a circle exactly when both its ends are in one component.
        foreign = [
            (a, b)
            for a in comp
            for b in sorted(edges[a])
            if b in members and not family(a, b, modules)
        ]
        if not foreign:
            print(f"ok   a module and its own children only (allowed): {', '.join(comp)}")
            continue
        failed = True
        # The shortest circle through an arrow that is not parent/child.
        loop = min(
            (path(edges, members, b, a) + [b] for a, b in foreign),
            key=len,
        )
        print(f"FAIL import circle among {len(comp)} files: {', '.join(comp)}")
        for a, b in zip(loop, loop[1:]):
            lines = ", ".join(str(n) for n in sorted(set(edges[a][b])))
            print(f"       {a} -> {b}  (line {lines})")
        pairs = sorted((a, b) for a, b in foreign if a in edges.get(b, {}) and a < b)
        for a, b in pairs:
            print(f"     two-file circle: {a} <-> {b}")
    n_edges = sum(len(d) for d in edges.values())
    if failed:
        print("     move what both files need into a module below them both, so that every")
        print("     arrow runs one way (a parent and its own children may use each other)")
        return 1
    print(f"ok   no import circles in shared/src ({len(edges)} files, {n_edges} arrows)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
