#!/usr/bin/env python3
"""Write transformed copies of an SWF trace as `submit_s,run_s` CSV, to check a policy on
workloads it was not developed on (docs/policy.md, "The same trace, transformed").

    scripts/trace_variants.py ../shared/traces/SDSC-BLUE-2000-4.2-cln.swf.gz /tmp/variants

writes, into the directory given:

- first_third.csv, last_third.csv: the first and the last third of the trace's span
  (other years, other users; the last third starts at 0);
- x2load.csv, x8load.csv: every submit time divided by 2 or 8 (twice and eight times
  the load, the daily cycle squeezed to 12 h or 3 h, which the seasonal model does not
  know);
- short.csv: every run time divided by 10 (at least 1 s);
- long.csv: the first half of the jobs with their run times tripled.

Jobs whose run time is missing or not positive are left out, as `capstan simulate`
skips them. The input may be gzip-compressed.
"""

import gzip
import os
import sys


def read_swf(path):
    opener = gzip.open if open(path, "rb").read(2) == b"\x1f\x8b" else open
    jobs = []
    with opener(path, "rt") as f:
        for line in f:
            if line.startswith(";") or not line.strip():
                continue
            fields = line.split()
            submit, run = float(fields[1]), float(fields[3])
            if run > 0:
                jobs.append((submit, run))
    jobs.sort()
    return jobs


def write(path, jobs):
    with open(path, "w") as out:
        out.write("submit_s,run_s\n")
        for submit, run in jobs:
            out.write(f"{submit:.0f},{run:.1f}\n")


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: trace_variants.py TRACE.swf[.gz] OUT_DIR")
    jobs = read_swf(sys.argv[1])
    if not jobs:
        sys.exit(f"{sys.argv[1]}: no job with a positive run time")
    out = sys.argv[2]
    os.makedirs(out, exist_ok=True)
    start, end = jobs[0][0], jobs[-1][0]
    third = (end - start) / 3
    variants = {
        "first_third": [(s, r) for s, r in jobs if s < start + third],
        "last_third": [(s - (start + 2 * third), r) for s, r in jobs if s >= start + 2 * third],
        "x2load": [(s / 2, r) for s, r in jobs],
        "x8load": [(s / 8, r) for s, r in jobs],
        "short": [(s, max(1.0, r / 10)) for s, r in jobs],
        "long": [(s, r * 3) for s, r in jobs[: len(jobs) // 2]],
    }
    for name, rows in variants.items():
        path = os.path.join(out, f"{name}.csv")
        write(path, rows)
        print(f"{path}: {len(rows)} jobs")


if __name__ == "__main__":
    main()
