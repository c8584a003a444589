#!/usr/bin/env python3
"""Checks the module import graph of src/ (top-level modules: src/x.rs and src/x/** are `x`).

An edge x -> y is a `crate::y` path in x's code (`use crate::y::...`, `crate::y::f()`,
`use crate::{y, ...}`); comments, doc comments, string literals and `#[cfg(test)]` code (the
src/**/tests*.rs files and inline `#[cfg(test)] mod ... { }` blocks) are not read. lib.rs only
lists the modules and main.rs is the binary (it names the library by its crate name).

Fails (exit 1) when
- the graph has a cycle (each one found is printed), or
- a bottom module (config, error, frame, route, bucket) imports anything but a leaf: a module
  that imports nothing of the crate itself (today frame, bucket, route, headers). So the
  bottom is at most two deep and nothing in it reaches a stage above it.
Prints the bottom's edges and the number of modules and edges."""
import os, re, sys

BOTTOM = ["config", "error", "frame", "route", "bucket"]

root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")


def strip(text):
    """The code of `text` with comments, strings and char literals blanked (newlines kept)."""
    out, i, n = [], 0, len(text)
    blank = lambda s: re.sub(r"[^\n]", " ", s)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append(blank(text[i:j])); i = j
        elif text.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if text.startswith("/*", j): depth += 1; j += 2
                elif text.startswith("*/", j): depth -= 1; j += 2
                else: j += 1
            out.append(blank(text[i:j])); i = j
        elif (m := re.match(r'b?r(#*)"', text[i:i + 300])) and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")):
            close = '"' + m.group(1)
            j = text.find(close, i + m.end())
            j = n if j < 0 else j + len(close)
            out.append(blank(text[i:j])); i = j
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append(blank(text[i:j + 1])); i = j + 1
        elif c == "'" and i + 2 < n and (text[i + 1] == "\\" or text[i + 2] == "'"):
            # A char literal ('x', '\n', '\u{1F600}'); otherwise a lifetime, kept.
            j = i + 2
            while j < n and text[j] != "'":
                j += 2 if text[j] == "\\" else 1
            out.append(blank(text[i:j + 1])); i = j + 1
        else:
            out.append(c); i += 1
    return "".join(out)


def drop_test_blocks(code):
    """`code` without its `#[cfg(test)] mod name { ... }` blocks."""
    while m := re.search(r"#\[cfg\(test\)\]\s*mod\s+\w+\s*\{", code):
        depth, j = 1, m.end()
        while j < len(code) and depth:
            depth += {"{": 1, "}": -1}.get(code[j], 0)
            j += 1
        code = code[:m.start()] + code[j:]
    return code


def targets(code):
    """The top-level modules `code` names with a `crate::` path."""
    found = set()
    for m in re.finditer(r"\bcrate\s*::\s*(\w+|\{)", code):
        if m.group(1) != "{":
            found.add(m.group(1))
            continue
        # `crate::{a, b::{c, d}}`: the first word of each item at the group's top level.
        depth, j, item = 1, m.end(), ""
        items = []
        while j < len(code) and depth:
            ch = code[j]
            depth += {"{": 1, "}": -1}.get(ch, 0)
            if depth == 1 and ch == ",":
                items.append(item); item = ""
            elif depth >= 1:
                item += ch
            j += 1
        items.append(item)
        found.update(w.group(0) for i in items if (w := re.match(r"\s*\w+", i)))
    return {f.strip() for f in found}


def module_of(rel):
    parts = rel.split(os.sep)
    return parts[0][:-3] if len(parts) == 1 else parts[0]


graph = {}
for dirpath, _, files in os.walk(root):
    for f in files:
        if not f.endswith(".rs") or re.match(r"tests.*\.rs$", f):
            continue
        rel = os.path.relpath(os.path.join(dirpath, f), root)
        if rel in ("lib.rs", "main.rs"):
            continue
        mod = module_of(rel)
        code = drop_test_blocks(strip(open(os.path.join(dirpath, f), encoding="utf-8").read()))
        graph.setdefault(mod, set()).update(t for t in targets(code) if t != mod)

unknown = {(m, t) for m, ts in graph.items() for t in ts if t not in graph}
bad = [f"{m} -> crate::{t}: no such module in src/" for m, t in sorted(unknown)]

# Cycles: a depth-first search; each back edge closes one.
state, stack, cycles = {}, [], []


def visit(m):
    state[m] = "open"; stack.append(m)
    for t in sorted(graph.get(m, ())):
        if state.get(t) == "open":
            cycles.append(stack[stack.index(t):] + [t])
        elif t in graph and t not in state:
            visit(t)
    stack.pop(); state[m] = "done"


sys.setrecursionlimit(10000)
for m in sorted(graph):
    if m not in state:
        visit(m)
bad += ["import cycle: " + " -> ".join(c) for c in cycles]

leaves = {m for m, ts in graph.items() if not ts}
for m in BOTTOM:
    for t in sorted(graph.get(m, ())):
        if t not in leaves:
            bad.append(f"{m} is at the bottom but imports {t}, which imports "
                       f"{', '.join(sorted(graph.get(t, ()))) or '?'}")

edges = sum(len(ts) for ts in graph.values())
print(f"{len(graph)} modules, {edges} edges; leaves: {', '.join(sorted(leaves))}")
for m in BOTTOM:
    print(f"  {m} -> {', '.join(sorted(graph.get(m, ()))) or '(nothing)'}")
for b in bad:
    print(f"FAIL: {b}")
sys.exit(1 if bad else 0)
