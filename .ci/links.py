#!/usr/bin/env python3
"""Checks every relative link of README.md, docs/*.md, bench/README.md and bench/results/*.md
(flat: pages in subdirectories of docs/ are not looked for): the file it names exists, and an
anchor (#part) names a heading of that file (GitHub's slugs). External links are not fetched
(CI may be offline). docs/WEBSOCKET_GUIDE.md is a verbatim copy of the Kairos guide, whose
links point into the documentation it came from: it is not checked, but may be linked to."""
import os, re, sys

root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
def md_in(folder):
    return sorted(
        os.path.join(folder, f) for f in os.listdir(os.path.join(root, folder)) if f.endswith(".md")
    )

pages = ["README.md"] + md_in("docs") + ["bench/README.md"] + md_in(os.path.join("bench", "results"))
pages = [p for p in pages if p != os.path.join("docs", "WEBSOCKET_GUIDE.md")]

def slugs(path):
    text = open(os.path.join(root, path), encoding="utf-8").read()
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    out = set()
    for h in re.findall(r"^#{1,6}\s+(.*)$", text, flags=re.M):
        s = re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
        n, base = 1, s
        while s in out:
            s = f"{base}-{n}"; n += 1
        out.add(s)
    return out

bad = []
for page in pages:
    text = open(os.path.join(root, page), encoding="utf-8").read()
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"^[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        full = os.path.normpath(os.path.join(os.path.dirname(page), path)) if path else page
        if not os.path.exists(os.path.join(root, full)):
            bad.append(f"{page}: {target}: no file {full}")
        elif anchor and full.endswith(".md") and anchor not in slugs(full):
            bad.append(f"{page}: {target}: no heading #{anchor} in {full}")
for b in bad:
    print(b)
print(f"links: {len(pages)} pages checked, {len(bad)} broken")
sys.exit(1 if bad else 0)
