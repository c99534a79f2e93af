#!/usr/bin/env python3
"""Checks the layout rules of docs/architecture.md:

- no file in src/ longer than MAX_LINES lines (tests included), no function longer than
  MAX_FN_LINES lines (from its `fn` line to its closing brace);
- no import cycle between files of src/: a file's imports are its `use` trees and the paths in
  its code that start at `crate`, `super`, `self` or one of its child modules (`sts::handle(..)`),
  each resolved to the file that defines the item (following `pub use` re-exports), and the
  resulting graph must have no cycle. A parent's `pub use child::Item` re-export is a
  declaration, not a dependency; anything else a parent takes from its child is. Test code
  (`#[cfg(test)]` modules and files) is left out: a test may enter through the front door;
- no import cycle between modules: the same graph with each file folded into its module (a
  top-level file of src/, or a top-level folder with everything in it);
- leaves import nothing from the crate (LEAVES), components nothing from config/ (NOT_CONFIG);
- no text in the repository cites a document that is not in it (the working notes the project
  was planned in): every reference points at a file a reader of the repository can open.

Usage: tools/check-layout.py [--graph | --modules]   (exit 1 on a violation; --graph prints
every edge between files, --modules every edge between modules with the files behind it)
"""
import re
import sys
from pathlib import Path

MAX_LINES = 550
MAX_FN_LINES = 80
# Modules many others use: they import nothing from the crate.
# Components take a small config of their own, made by config/: they never import config/.
NOT_CONFIG = ("inbound", "token", "upstream")
LEAVES = ("bucket", "cause", "cli", "escape", "files", "headers", "host", "metrics", "secret", "sync", "tally", "watch")
SRC = Path(__file__).resolve().parent.parent / "src"


def module_of(path: Path) -> tuple:
    rel = path.relative_to(SRC).with_suffix("")
    parts = list(rel.parts)
    if parts in (["lib"], ["main"]):
        return ()
    if parts[-1] == "mod":
        parts = parts[:-1]
    return tuple(parts)


def skipped(text: str):
    """Yields (start, end, stand-in) for each comment (stand-in "") and each string or char
    literal (`""` or `' '`) of `text`: what is not code."""
    i, n = 0, len(text)
    while i < n:
        c, start = text[i], i
        if text.startswith("//", i):
            i = text.find("\n", i)
            i = n if i < 0 else i
            yield start, i, ""
        elif text.startswith("/*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                depth += text.startswith("/*", i) - text.startswith("*/", i)
                i += 2 if text.startswith(("/*", "*/"), i) else 1
            yield start, i, ""
        elif re.match(r'(?<![\w])b?r(#*)"', text[i:]) and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")):
            m = re.match(r'b?r(#*)"', text[i:])
            end = text.find('"' + m.group(1), i + m.end())
            i = n if end < 0 else end + 1 + len(m.group(1))
            yield start, i, '""'
        elif c == '"':
            i += 1
            while i < n and text[i] != '"':
                i += 2 if text[i] == "\\" else 1
            i += 1
            yield start, i, '""'
        elif c == "'" and re.match(r"'(\\.[^']*|[^'\\])'", text[i:]):
            i += re.match(r"'(\\.[^']*|[^'\\])'", text[i:]).end()
            yield start, i, "' '"
        else:
            i += 1


def strip_comments(text: str) -> str:
    """Blanks comments, string and char literals, so that only code is searched."""
    out, at = [], 0
    for start, end, stand_in in skipped(text):
        out += [text[at:start], stand_in]
        at = end
    return "".join(out) + text[at:]


def blank_comments(text: str) -> str:
    """`strip_comments`, keeping every character's place: comments and literals become spaces
    (their line breaks stay), so that braces can be matched and lines counted on the result."""
    out = list(text)
    for start, end, _ in skipped(text):
        for j in range(start, min(end, len(text))):
            if out[j] != "\n":
                out[j] = " "
    return "".join(out)


def expand(prefix: str, tree: str) -> list:
    """Expands a use tree (`a::{b, c::{d, e}}`) into full paths."""
    tree = tree.strip()
    depth, start = 0, None
    for i, ch in enumerate(tree):
        if ch == "{" and depth == 0:
            start = i
        depth += ch == "{"
        depth -= ch == "}"
    if start is None:
        return [prefix + tree] if tree else []
    head, inner = tree[:start], tree[start + 1 : tree.rindex("}")]
    parts, depth, cur = [], 0, ""
    for ch in inner:
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
            continue
        depth += ch == "{"
        depth -= ch == "}"
        cur += ch
    parts.append(cur)
    out = []
    for part in parts:
        out += expand(prefix + head, part)
    return out


TEST_ONLY = r"#\[cfg\(test\)\]\s*(?:#\[[^\]]*\]\s*)*(?:pub(?:\([^)]*\))?\s+)?mod\s+"


def inline_mods(text: str) -> list:
    """The (start, end, test-only) of inline `mod name { ... }` blocks, such as `mod tests`."""
    spans = []
    for m in re.finditer(r"\bmod\s+\w+\s*\{", text):
        depth, i = 1, m.end()
        while i < len(text) and depth:
            depth += (text[i] == "{") - (text[i] == "}")
            i += 1
        test_only = re.search(TEST_ONLY + r"$", text[: m.start() + 4]) is not None
        spans.append((m.start(), i, test_only))
    return spans


def use_paths(text: str, children=()):
    """Yields (is_pub, path, inline mod depth) for each leaf of each `use` statement, and for each
    path in code that starts at `crate`, `super`, `self` or a child module (`sts::handle(..)`),
    `as` renames dropped."""
    spans = inline_mods(text)

    def depth(at):
        return sum(start <= at < end for start, end, _ in spans)

    def in_test(at):
        return any(start <= at < end and test for start, end, test in spans)

    uses = list(re.finditer(r"(pub(?:\([^)]*\))?\s+)?\buse\s+([^;]+);", text))
    for m in uses:
        if in_test(m.start()):
            continue
        tree = re.sub(r"\s+as\s+\w+", "", m.group(2))
        for path in expand("", re.sub(r"\s+", "", tree)):
            yield bool(m.group(1)), path, depth(m.start())
    code = list(text)
    for m in uses:
        code[m.start() : m.end()] = " " * (m.end() - m.start())
    code = "".join(code)
    roots = "|".join(["crate", "super", "self", *sorted(children)])
    for m in re.finditer(rf"(?<![:\w])(?:{roots})(?:::\w+)+", code):
        if in_test(m.start()):
            continue
        yield False, m.group(0), depth(m.start())


def cycles(edges: dict) -> list:
    """Tarjan's strongly connected components of `edges`: those of two or more nodes."""
    index, low, stack, on, sccs = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
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
                sccs.append(comp)

    sys.setrecursionlimit(10000)
    for v in edges:
        if v not in index:
            visit(v)
    return sccs


FN = re.compile(r"^[ \t]*(?:pub(?:\([^)]*\))?\s+)?(?:const\s+)?(?:async\s+)?(?:unsafe\s+)?(?:extern\s+\"[^\"]*\"\s+)?fn\s+(\w+)", re.M)


def function_lengths() -> list:
    """(file:line, name, lines) of every function with a body in src/."""
    found = []
    for path in sorted(SRC.rglob("*.rs")):
        raw = path.read_text()
        text = blank_comments(raw)
        for m in FN.finditer(text):
            i = m.end()
            while i < len(text) and text[i] not in "{;":
                i += 1
            if i >= len(text) or text[i] == ";":
                continue  # a declaration without a body
            depth, j = 1, i + 1
            while j < len(text) and depth:
                depth += (text[j] == "{") - (text[j] == "}")
                j += 1
            first = text.count("\n", 0, m.start()) + 1
            last = text.count("\n", 0, j) + 1
            found.append((f"{path.relative_to(SRC.parent)}:{first}", m.group(1), last - first + 1))
    return found


# Documents the project was planned in, which are not in the repository: a reader cannot open
# them, so nothing may point at them (patterns assembled so that this file does not match).
CITATIONS = re.compile(
    "|".join(
        [
            r"\bthe " + "issue" + r"\b",
            r"\b" + "issue" + r"s? #?\d+",
            r"\b" + "SPEC" + r"(?:\.md)?\b",
            r"\b" + "STYLE" + r"\.md\b",
            r"\.\./" + "shared",
        ]
    )
)
CITATION_ROOTS = ("src", "tests", "benches", "bench", "fuzz", "docs", "tools", "deploy", "systemd", ".ci")
CITATION_FILES = ("README.md", "CONTRIBUTING.md", "SECURITY.md", "proxy.toml.example", "Dockerfile")


def citations() -> list:
    """Each line of the repository's text that cites a document outside it."""
    root = SRC.parent
    paths = [root / f for f in CITATION_FILES]
    for folder in CITATION_ROOTS:
        paths += [p for p in (root / folder).rglob("*") if p.is_file()]
    out = []
    for path in sorted(paths):
        if path.suffix in (".png", ".lock") or "target" in path.parts or path == Path(__file__).resolve():
            continue
        try:
            lines = path.read_text().splitlines()
        except (UnicodeDecodeError, FileNotFoundError):
            continue
        for number, line in enumerate(lines, 1):
            if CITATIONS.search(line):
                out.append(
                    f"{path.relative_to(root)}:{number}: cites a document outside the repository: "
                    f"{line.strip()[:100]}"
                )
    return out


def main() -> int:
    files = {module_of(p): p for p in SRC.rglob("*.rs") if p.name != "main.rs"}
    texts = {m: strip_comments(p.read_text()) for m, p in files.items()}
    # Test-only files (`#[cfg(test)] mod testing;`) and test modules are not part of the
    # dependency structure: tests may reach a module through the crate's front door.
    test_only = {
        m + (name,)
        for m, text in texts.items()
        for name in re.findall(TEST_ONLY + r"(\w+)\s*;", text)
    }
    texts = {m: ("" if m in test_only else t) for m, t in texts.items()}
    problems = []
    for m, p in files.items():
        lines = p.read_text().count("\n")
        if lines > MAX_LINES:
            problems.append(f"{p.relative_to(SRC.parent)}: {lines} lines (limit {MAX_LINES})")

    reexports = {m: {} for m in files}
    for m, text in texts.items():
        for is_pub, path, inner in use_paths(text):
            if is_pub and not inner:
                reexports[m][path.split("::")[-1]] = path

    def absolute(m: tuple, path: str, inner: int = 0):
        segs = [s for s in path.split("::") if s]
        m = m + ("#inline",) * inner
        if not segs:
            return None
        if segs[0] == "crate":
            base, segs = (), segs[1:]
        elif segs[0] in ("self", "super"):
            base = m
            while segs and segs[0] in ("self", "super"):
                base = base[:-1] if segs[0] == "super" else base
                segs = segs[1:]
            if base and base[-1] == "#inline":
                return None  # something inside the same file
        elif (m + (segs[0],)) in files:
            base = m  # a child module named without `self::`
        else:
            return None
        return base, segs

    def resolve(m: tuple, path: str, seen=(), inner=0):
        found = absolute(m, path, inner)
        if found is None:
            return None
        mod, segs = found
        while segs and mod + (segs[0],) in files:
            mod, segs = mod + (segs[0],), segs[1:]
        if segs and segs[0] in reexports.get(mod, {}) and (mod, segs[0]) not in seen:
            target = resolve(mod, reexports[mod][segs[0]], seen + ((mod, segs[0]),))
            if target is not None:
                return target
        return mod

    edges = {m: set() for m in files}
    for m, text in texts.items():
        children = {c[-1] for c in files if len(c) == len(m) + 1 and c[: len(m)] == m}
        for is_pub, path, inner in use_paths(text, children):
            target = resolve(m, path, inner=inner)
            if target is not None and target != m and target in files:
                # A parent re-exporting its own child (`mod x; pub use x::Y;`) declares, not
                # depends; a parent that calls into its child does depend on it.
                if is_pub and not inner and target[: len(m)] == m and len(target) == len(m) + 1:
                    continue
                edges[m].add(target)

    if "--graph" in sys.argv:
        for m in sorted(edges):
            for t in sorted(edges[m]):
                print(f"{'::'.join(m) or 'lib'} -> {'::'.join(t) or 'lib'}")

    for comp in cycles(edges):
        names = sorted(str(files[c].relative_to(SRC.parent)) for c in comp)
        problems.append("import cycle between files " + ", ".join(names))

    modules = {}
    for m, targets in edges.items():
        for t in targets:
            if m[:1] != t[:1]:
                modules.setdefault(m[:1], set()).add(t[:1])
                modules.setdefault(t[:1], set())
    if "--modules" in sys.argv:
        for m in sorted(modules):
            for t in sorted(modules[m]):
                behind = sorted(
                    f"{'::'.join(a) or 'lib'} -> {'::'.join(b) or 'lib'}"
                    for a in edges
                    for b in edges[a]
                    if a[:1] == m and b[:1] == t
                )
                print(f"{'::'.join(m) or 'lib'} -> {'::'.join(t) or 'lib'}   ({'; '.join(behind)})")
    for comp in cycles(modules):
        names = sorted("::".join(c) or "lib" for c in comp)
        problems.append("import cycle between modules " + ", ".join(names))
    for leaf in LEAVES:
        if modules.get((leaf,)):
            used = ", ".join(sorted("::".join(t) or "lib" for t in modules[(leaf,)]))
            problems.append(f"the leaf {leaf} imports {used} (leaves import nothing from the crate)")

    for component in NOT_CONFIG:
        if ("config",) in modules.get((component,), ()):
            problems.append(
                f"{component} imports config (a component takes its own small config type, "
                "made by config/components.rs)"
            )

    long_functions = function_lengths()
    for where, name, length in long_functions:
        if length > MAX_FN_LINES:
            problems.append(f"{where}: fn {name} is {length} lines (limit {MAX_FN_LINES})")
    problems += citations()

    for problem in problems:
        print(problem, file=sys.stderr)
    if not problems:
        longest = max(long_functions, key=lambda f: f[2], default=("", "", 0))
        print(
            f"layout OK: {len(files)} files, none above {MAX_LINES} lines; no function above "
            f"{MAX_FN_LINES} lines (longest: {longest[1]}, {longest[2]}, {longest[0]}); no import "
            f"cycle between files or between {len(modules)} modules; leaves are leaves; components "
            "do not import config/; no "
            "citation of a document outside the repository"
        )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
