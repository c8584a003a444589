#!/usr/bin/env python3
"""Compares two agents of an Autobahn index.json case by case.
usage: autobahn_compare.py index.json AGENT REFERENCE
Exit 1 if any case's (behavior, behaviorClose) differs or any case FAILED."""
import collections, json, sys

idx = json.load(open(sys.argv[1]))
agent, ref = idx[sys.argv[2]], idx[sys.argv[3]]
key = lambda c: [int(p) for p in c.split(".")]
bad = 0
for name, cases in ((sys.argv[2], agent), (sys.argv[3], ref)):
    counts = collections.Counter(r["behavior"] for r in cases.values())
    print(f"{name}: {len(cases)} cases, {dict(sorted(counts.items()))}")
for case in sorted(set(agent) | set(ref), key=key):
    a, r = agent.get(case), ref.get(case)
    va = a and (a["behavior"], a["behaviorClose"])
    vr = r and (r["behavior"], r["behaviorClose"])
    if va != vr:
        bad += 1
        print(f"  DIFFERS {case}: {sys.argv[2]} {va} vs {sys.argv[3]} {vr}")
    elif "FAILED" in (va or ()):
        bad += 1
        print(f"  FAILED {case} in both")
print("same verdict for every case" if not bad else f"{bad} case(s) differ or failed")
sys.exit(1 if bad else 0)
