#!/usr/bin/env python3
"""Where the GPU time of a profiled range goes, by kernel: the table of an ncu report.

    ncu --profile-from-start off --metrics gpu__time_duration.sum --export R ...
    ncu --import R.ncu-rep --csv --page raw --print-kernel-base function > R.csv
    scripts/ncu_summary.py R.csv [--json OUT] [--title TEXT]

Prints, per kernel function, its launches, total and mean duration and share of the range's
summed kernel time (the kernels' own time: ncu serializes launches, so gaps are not in it).
"""
import argparse
import csv
import json
import sys
from collections import defaultdict

UNITS = {"nsecond": 1e-3, "ns": 1e-3, "usecond": 1.0, "us": 1.0, "msecond": 1e3, "ms": 1e3,
         "second": 1e6, "s": 1e6}


def read_rows(path):
    with open(path, newline="") as f:
        lines = [line for line in f if not line.startswith("==")]
    rows = list(csv.reader(lines))
    header = next((i for i, row in enumerate(rows) if row and row[0] == "ID"), None)
    if header is None:
        sys.exit(f"ncu_summary: {path} has no ncu raw-page header (a row starting with ID)")
    names = rows[header]
    units = rows[header + 1]
    try:
        name_col = names.index("Kernel Name")
        time_col = names.index("gpu__time_duration.sum")
    except ValueError as e:
        sys.exit(f"ncu_summary: {path}: column missing ({e})")
    scale = UNITS.get(units[time_col])
    if scale is None:
        sys.exit(f"ncu_summary: unknown time unit '{units[time_col]}'")
    out = []
    for row in rows[header + 2 :]:
        if len(row) <= max(name_col, time_col) or not row[time_col]:
            continue
        out.append((row[name_col], float(row[time_col].replace(",", "")) * scale))
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("csv")
    parser.add_argument("--json")
    parser.add_argument("--title", default="")
    args = parser.parse_args()
    rows = read_rows(args.csv)
    if not rows:
        sys.exit(f"ncu_summary: {args.csv}: no kernel was profiled")
    by_name = defaultdict(lambda: [0, 0.0])
    for name, us in rows:
        by_name[name][0] += 1
        by_name[name][1] += us
    total = sum(us for _, us in rows)
    table = sorted(by_name.items(), key=lambda kv: -kv[1][1])
    print(f"{args.title}: {len(rows)} kernels, {total:.1f} µs of kernel time")
    print("| kernel | launches | total µs | mean µs | share |")
    print("|---|---:|---:|---:|---:|")
    for name, (count, us) in table:
        print(f"| {name[:60]} | {count} | {us:.1f} | {us / count:.2f} | {us / total:.3f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"title": args.title, "kernels": len(rows), "total_us": total,
                       "by_kernel": [{"name": n, "launches": c, "total_us": us}
                                     for n, (c, us) in table]}, f, indent=1)


if __name__ == "__main__":
    main()
