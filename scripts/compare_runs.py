# Paired comparison of two runs of one experiment seed (the same test scenes): the standing policy `POLICY`
# (default refined) of RUN_OTHER against RUN_BASE, per task, with Newcombe's paired 95 % interval (method 10,
# as crates/world4rl/src/eval/paired.rs computes it), from each run's eval/done.json.
#   python3 scripts/compare_runs.py RUN_BASE RUN_OTHER [POLICY]
import json, math, sys
Z = 1.959963984540054
def wilson(k, n, z=Z):
    p = k / n; d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d; h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return c - h, c + h
def newcombe(a, b, c, d, z=Z):
    n = a + b + c + d; p1 = (a + b) / n; p2 = (a + c) / n
    l1, u1 = wilson(a + b, n); l2, u2 = wilson(a + c, n)
    den = math.sqrt((a + b) * (c + d) * (a + c) * (b + d)); cr = a * d - b * c
    corr = cr - n / 2 if cr > n / 2 else (cr if cr < 0 else 0.0)
    phi = corr / den if den > 0 else 0.0
    diff = p1 - p2
    dl = math.sqrt(max(0, (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2))
    ep = math.sqrt(max(0, (u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2))
    return diff, max(-1, diff - dl), min(1, diff + ep)
def standing(run, task, name):
    rows = json.load(open(f"{run}/eval/done.json"))["record"]
    r = next(x for x in rows if x["task"] == task)
    p = next(x for x in r["policies"] if x["name"] == name)
    t = next(x for x in p["test"] if x["mode"] == p["mode"])
    return t["outcomes"], p["mode"]
base, other = sys.argv[1], sys.argv[2]
name = sys.argv[3] if len(sys.argv) > 3 else "refined"
for task in ["push-block", "turn-lever", "slide-handle"]:
    try:
        ob, mb = standing(base, task, name); oo, mo = standing(other, task, name)
    except (StopIteration, FileNotFoundError, KeyError) as e:
        print(task, "missing", e); continue
    a = sum(1 for x, y in zip(oo, ob) if x and y); b = sum(1 for x, y in zip(oo, ob) if x and not y)
    c = sum(1 for x, y in zip(oo, ob) if y and not x); d = len(ob) - a - b - c
    diff, lo, hi = newcombe(a, b, c, d)
    print(f"{task}: {name} {100*sum(ob)/len(ob):.1f} % ({mb}) -> {100*sum(oo)/len(oo):.1f} % ({mo}): {100*diff:+.1f} [{100*lo:+.1f}, {100*hi:+.1f}] on {len(ob)} scenes")
