#!/usr/bin/env python3
"""Fails when modules of a crate import each other in a cycle.

cargo-modules (`cargo modules dependencies --acyclic`) does this from
rust-analyzer's view of the crate, but its releases need a newer compiler
than ours and it takes long to build on CI's machine; this is the same
check done from the source text, which our code's plain style allows:

- the module tree comes from `mod name;` declarations;
- an edge a -> b is a path in a that names b: `crate::b::...`,
  `super::b`, `self::b`, or a bare `b::...` where b is a child or sibling
  of a (not after `::`, so `other_crate::b::x` does not count);
- a module's use of its own ancestors (`super::Thing` from a child) is how
  Rust shares a parent's items and is not counted;
- `#[cfg(test)] mod tests` blocks and comments are ignored.

Usage: scripts/module-cycles.py [CRATE_DIR ...]   (default: every crate)
Prints each cycle; exits 1 when there is one.
"""
import os
import re
import sys


def crate_modules(src_dir, root_file):
    mods = {}

    def load(modpath, path):
        mods[modpath] = path
        text = open(path).read()
        here = os.path.dirname(path)
        base = os.path.basename(path)
        sub = here if base in ("main.rs", "lib.rs", "mod.rs") else os.path.join(here, base[:-3])
        for m in re.finditer(r"^\s*(?:pub(?:\([^)]*\))?\s+)?mod\s+(\w+)\s*;", text, re.M):
            for cand in (os.path.join(sub, m.group(1) + ".rs"), os.path.join(sub, m.group(1), "mod.rs")):
                if os.path.exists(cand):
                    load(modpath + (m.group(1),), cand)
                    break

    load((), os.path.join(src_dir, root_file))
    return mods


def edges_of(mods):
    edges = {m: set() for m in mods}
    for m, path in mods.items():
        text = re.sub(r"//.*", "", open(path).read())
        text = re.split(r"#\[cfg\(test\)\]\s*mod tests", text)[0]
        for p in re.findall(r"(?<!::)\b((?:crate|super|self)(?:::\w+)+)", text):
            parts = p.split("::")
            cur, i = list(m), 0
            if parts[0] == "crate":
                cur, i = [], 1
            while i < len(parts) and parts[i] in ("super", "self"):
                if parts[i] == "super":
                    cur = cur[:-1]
                i += 1
            target = tuple(cur)
            while i < len(parts) and target + (parts[i],) in mods:
                target += (parts[i],)
                i += 1
            edges[m].add(target)
        for name in re.findall(r"(?<![:\w])(\w+)::", text):
            for t in (m + (name,), m[:-1] + (name,)):
                if t in mods:
                    edges[m].add(t)
    # Not counted: a module itself, and its ancestors.
    return {m: {t for t in ts if t != m and not (len(t) < len(m) and m[: len(t)] == t)} for m, ts in edges.items()}


def cycles(graph):
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
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
                out.append(comp)

    for v in graph:
        if v not in index:
            visit(v)
    return out


def main():
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    crates = sys.argv[1:] or sorted(
        d for d in os.listdir(repo) if os.path.exists(os.path.join(repo, d, "Cargo.toml")) and os.path.isdir(os.path.join(repo, d, "src"))
    )
    found = False
    name = lambda m: "crate::" + "::".join(m) if m else "crate"
    for crate in crates:
        src = os.path.join(repo, crate, "src")
        for root in ("lib.rs", "main.rs"):
            if not os.path.exists(os.path.join(src, root)):
                continue
            graph = edges_of(crate_modules(src, root))
            for cycle in cycles(graph):
                found = True
                members = sorted(cycle)
                print(f"{crate}/src/{root}: modules import each other in a cycle: " + " <-> ".join(name(c) for c in members))
                for c in members:
                    print(f"    {name(c)} -> " + ", ".join(sorted(name(t) for t in graph[c] if t in cycle)))
    if found:
        sys.exit(1)
    print(f"module-cycles: no import cycles between modules in {', '.join(crates)}")


if __name__ == "__main__":
    main()
