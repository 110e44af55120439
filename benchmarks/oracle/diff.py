"""Print the differences between two compare_traces.py dumps, scenario by scenario.

    python3 benchmarks/oracle/diff.py /tmp/trace_fastai.json /tmp/trace_fastloop.json [--max 8] [--tol 0]

Floats are compared exactly by default (`--tol` gives an absolute tolerance); for a float list that differs
the largest absolute difference is shown.  Trace lists are compared record by record and the first `--max`
differing records are printed.
"""

from __future__ import annotations

import argparse
import json
import math


def _num(x):
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def walk(a, b, path, out, tol):
    "Collect (path, a, b) for every leaf that differs."
    if isinstance(a, dict) and isinstance(b, dict):
        for k in list(a) + [k for k in b if k not in a]:
            if k not in a:
                out.append((f"{path}.{k}", "<missing>", b[k]))
            elif k not in b:
                out.append((f"{path}.{k}", a[k], "<missing>"))
            else:
                walk(a[k], b[k], f"{path}.{k}", out, tol)
    elif isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            n = min(len(a), len(b))
            out.append((f"{path} (len {len(a)} vs {len(b)}; surplus)", a[n:], b[n:]))
        for i, (x, y) in enumerate(zip(a, b)):
            walk(x, y, f"{path}[{i}]", out, tol)
    elif _num(a) and _num(b):
        if not (a == b or (tol and math.isfinite(a) and math.isfinite(b) and abs(a - b) <= tol)):
            out.append((path, a, b))
    elif a != b:
        out.append((path, a, b))


def short(v, n=160):
    s = json.dumps(v) if not isinstance(v, str) else repr(v)
    return s if len(s) <= n else s[: n - 3] + "..."


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("a", help="reference dump (fastai)")
    ap.add_argument("b", help="candidate dump (fastloop)")
    ap.add_argument("--max", type=int, default=8, help="differences shown per field")
    ap.add_argument("--tol", type=float, default=0.0)
    ap.add_argument("--ignore", action="append", default=[],
                    help="skip differences whose path contains this text (repeatable), e.g. --ignore .grads")
    args = ap.parse_args()
    ref, cand = json.load(open(args.a)), json.load(open(args.b))
    print(f"ref  = {ref.get('_meta')}\ncand = {cand.get('_meta')}\n")
    n_same = 0
    for sc in [k for k in ref if k != "_meta"] + [k for k in cand if k not in ref and k != "_meta"]:
        if sc not in ref or sc not in cand:
            print(f"== {sc}: only in {'ref' if sc in ref else 'cand'}")
            continue
        diffs = []
        walk(ref[sc], cand[sc], "", diffs, args.tol)
        diffs = [d for d in diffs if not any(pat in d[0] for pat in args.ignore)]
        if not diffs:
            n_same += 1
            continue
        print(f"== {sc}: {len(diffs)} differing leaves")
        by_field = {}
        for p, x, y in diffs:
            field = p.lstrip(".").split("[")[0].split(".")[0] or "(root)"
            by_field.setdefault(field, []).append((p, x, y))
        for field, items in by_field.items():
            nums = [(x, y) for _, x, y in items if _num(x) and _num(y)]
            extra = ""
            if nums:
                extra = f"  (numeric: {len(nums)}, max |ref-cand| = {max(abs(x - y) for x, y in nums):.3g})"
            print(f"  -- {field}: {len(items)}{extra}")
            for p, x, y in items[: args.max]:
                print(f"     {p}\n        ref:  {short(x)}\n        cand: {short(y)}")
            if len(items) > args.max:
                print(f"     ... {len(items) - args.max} more")
    print(f"\n{n_same} scenario(s) identical.")


if __name__ == "__main__":
    main()
