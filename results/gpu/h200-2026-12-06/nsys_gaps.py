# nsys cuda_gpu_trace CSV of one marked prefill: GPU busy vs span, and the largest idle gaps.
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
ev = []
for r in rows:
    start = int(r.get("Start (ns)") or r.get("Start"))
    dur = int(r.get("Duration (ns)") or r.get("Duration"))
    ev.append((start, start + dur, r.get("Name", "?")))
ev.sort()
span = ev[-1][1] - ev[0][0]
busy, gaps, end, prev = 0, [], ev[0][0], None
for s, e, n in ev:
    if s > end:
        gaps.append((s - end, prev, n))
    busy += max(0, e - max(s, end))
    end = max(end, e)
    prev = n
print(f"{len(ev)} GPU activities, span {span/1e6:.2f} ms, busy {busy/1e6:.2f} ms, idle {(span-busy)/1e6:.2f} ms")
gaps.sort(reverse=True)
print(f"gaps > 5 us: {sum(1 for g in gaps if g[0] > 5000)}, their sum {sum(g[0] for g in gaps if g[0] > 5000)/1e6:.2f} ms")
for g, a, b in gaps[:15]:
    print(f"  {g/1e3:9.1f} us after {a[:60]} before {b[:60]}")
