#!/usr/bin/env python3
"""Time from each epilog to its record being in accounting, from the logs.

usage: latency.py SINCE_UNIX SLURMD_LOG... -- STATE_LOG

The epilog's line in slurmd's log ("[2026-11-22T10:14:33.978] spank-carbon: job 9024 on
node3: ... Wh ...", local time) and the courier's line in the state directory's log
("1795342486.147 [pid] spank-carbon: info job 9024.node3: record in SystemComment ...").
Prints "median p99 max count" in seconds for epilogs after SINCE_UNIX.
"""
import datetime
import re
import statistics
import sys

args = sys.argv[1:]
since = float(args.pop(0))
sep = args.index("--")
slurmd_logs, state_log = args[:sep], args[sep + 1]
epilog = {}
pat = re.compile(r"^\[(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+)\] spank-carbon: job (\d+) on (\S+): .* Wh ")
for path in slurmd_logs:
    for line in open(path, errors="replace"):
        m = pat.match(line)
        if m:
            t = datetime.datetime.fromisoformat(m.group(1)).timestamp()
            if t >= since:
                epilog[f"{m.group(2)}.{m.group(3)}"] = t
lat = []
pat = re.compile(r"^(\d+\.\d+) \[\d+\] spank-carbon: info job (\d+\.\S+): record in ")
for line in open(state_log, errors="replace"):
    m = pat.match(line)
    if m and m.group(2) in epilog:
        d = float(m.group(1)) - epilog[m.group(2)]
        if 0 <= d < 86400:  # a record delivered again later counts once, the first time
            lat.append(d)
            del epilog[m.group(2)]
lat.sort()
if not lat:
    print("- - - 0")
else:
    p99 = lat[min(len(lat) - 1, round(0.99 * (len(lat) - 1)))]
    print(f"{statistics.median(lat):.2f} {p99:.2f} {lat[-1]:.2f} {len(lat)}")
