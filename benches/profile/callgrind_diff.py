#!/usr/bin/env python3
"""Per-message instruction counts from two callgrind profiles of the same server.

usage: callgrind_diff.py SHORT.callgrind SHORT.json LONG.callgrind LONG.json [TOP]

The two runs differ only in how many messages the server handled (the load generator's JSON
lines give `acked`: sends the server stored and answered), so subtracting them cancels
startup, registration and connection setup:
per message = (Ir_long - Ir_short) / (acked_long - acked_short). `acked`, not `sent`: under
callgrind on a busy machine the server can fall behind, and sends it never answered before
the run stopped cost it nothing (a warning says so when that happened). Prints the total and the top
functions by self and by inclusive cost, as a Markdown table. Standard library only.

With UNIT=connections in the environment the unit is an idle connection instead
(`idle.connections` of the lines: `MODE=connect scripts/profile.sh`); `frame-decode` lines
count `frames`.
"""
import os
import json
import re
import subprocess
import sys

LINE = re.compile(r"^\s*([\d,]+)\s+(?:\(\s*[\d.]+%\)\s+)?(.*?)\s*$")
HASH = re.compile(r"::h[0-9a-f]{16}")


def annotate(path, inclusive):
    out = subprocess.run(
        ["callgrind_annotate", f"--inclusive={'yes' if inclusive else 'no'}",
         "--threshold=100", path],
        check=True, capture_output=True, text=True).stdout
    costs, total = {}, None
    for line in out.splitlines():
        m = LINE.match(line)
        if not m:
            continue
        n, name = int(m.group(1).replace(",", "")), m.group(2)
        if "PROGRAM TOTALS" in name:
            total = n
            continue
        # "file:function [object]" -> "function"
        name = re.sub(r"\s+\[[^\]]*\]$", "", name)
        if ":" in name and not name.startswith("<"):
            head, _, rest = name.partition(":")
            if "/" in head or head == "???" or head.endswith(".rs") or head.endswith(".c"):
                name = rest
        name = HASH.sub("", name)
        costs[name] = costs.get(name, 0) + n
    return total, costs


def run(path):
    with open(path) as f:
        return json.loads(f.read().strip().splitlines()[-1])


def sent(path):
    line = run(path)
    if os.environ.get("UNIT") == "connections":
        return line["idle"]["connections"]
    if "frames" in line:
        return line["frames"]
    if line.get("unanswered", 0):
        print(f"warning: {path}: {line['unanswered']} sends unanswered (server behind); "
              "counting acked messages", file=sys.stderr)
    # `load` lines count acked sends; `store-append` lines count appended messages.
    return line.get("acked", line.get("messages", line.get("sent")))


def short(name, width=110):
    return name if len(name) <= width else name[: width - 1] + "…"


def main():
    if len(sys.argv) < 5:
        sys.exit(__doc__)
    s_cg, s_json, l_cg, l_json = sys.argv[1:5]
    top = int(sys.argv[5]) if len(sys.argv) > 5 else 25
    dn = sent(l_json) - sent(s_json)
    if dn <= 0:
        sys.exit("the long run did not send more messages than the short one")
    s_total, s_self = annotate(s_cg, False)
    l_total, l_self = annotate(l_cg, False)
    _, s_incl = annotate(s_cg, True)
    _, l_incl = annotate(l_cg, True)
    per_msg = (l_total - s_total) / dn
    unit = os.environ.get("UNIT", "frames" if "frames" in run(l_json) else "messages")
    print(f"{unit}: {sent(s_json)} (short) vs {sent(l_json)} (long): {dn} more")
    print(f"instructions per {unit.rstrip('s')} (whole process, all threads): {per_msg:,.0f}")
    for title, s, l in (("self", s_self, l_self), ("inclusive", s_incl, l_incl)):
        rows = sorted(((l.get(k, 0) - s.get(k, 0)) / dn, k) for k in set(s) | set(l))
        rows.reverse()
        print(f"\n| {title} Ir/msg | share | function |")
        print("|---:|---:|---|")
        for cost, name in rows[:top]:
            print(f"| {cost:,.0f} | {100 * cost / per_msg:.1f}% | `{short(name)}` |")


if __name__ == "__main__":
    main()
