#!/usr/bin/env python3
"""Summarise the raw pgbench results written by scripts/bench.sh.

Input: a TSV with columns mode, clients, round, target, tps, latency_ms, failed, and
optionally proxy_cpu_us_per_query, context_switches_per_query ("-" for direct).
(tps/latency empty when the run produced none). Output: one table row per mode x clients
with median tps per target, medians of paired ratios, and the median paired added latency;
then, when the CPU columns are there, the proxies' CPU time and context switches per query.
Pairs are the runs of the same round (the three targets run back to back in each round).
"""
import statistics
import sys
from collections import defaultdict

TARGETS = ("direct", "pgbouncer", "qproxy")


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def number(text):
    try:
        return float(text)
    except ValueError:
        return None


def fmt(value, spec):
    return "-" if value is None else format(value, spec)


def main(path):
    runs = defaultdict(dict)  # (mode, clients) -> round -> target -> (tps, lat, failed)
    order = []
    with open(path) as fh:
        for line in fh:
            fields = line.rstrip("\n").split("\t")
            mode, clients, rnd, target, tps, lat, failed = fields[:7]
            cpu, csw = (fields[7:9] + ["-", "-"])[:2]
            key = (mode, int(clients))
            if key not in runs:
                order.append(key)
            runs[key].setdefault(rnd, {})[target] = (
                float(tps) if tps else None,
                float(lat) if lat else None,
                failed,
                number(cpu),
                number(csw),
            )
    modes = ["simple", "extended", "prepared"]
    order.sort(key=lambda k: (modes.index(k[0]) if k[0] in modes else 99, k[1]))

    head = ("mode", "clients", "direct tps", "pgbouncer tps", "qproxy tps",
            "qproxy/direct", "pgbouncer/direct", "qproxy/pgbouncer",
            "pgbouncer +us/query", "qproxy +us/query", "failed (d/b/q)")
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join(["---"] * len(head)) + "|")
    for key in order:
        rounds = runs[key]

        def tps(t):
            return [r.get(t, (None,))[0] for r in rounds.values()]

        def ratio(a, b):
            out = []
            for r in rounds.values():
                x, y = r.get(a, (None,))[0], r.get(b, (None,))[0]
                if x is not None and y:
                    out.append(x / y)
            return med(out)

        def added(t):
            out = []
            for r in rounds.values():
                x, y = r.get(t, (None, None))[1], r.get("direct", (None, None))[1]
                if x is not None and y is not None:
                    # pgbench's latency average is per transaction; -S runs one query each.
                    out.append((x - y) * 1000.0)
            return med(out)

        def failed(t):
            vals = [r.get(t, (None, None, "missing"))[2] for r in rounds.values()]
            total, other = 0, []
            for v in vals:
                if v.isdigit():
                    total += int(v)
                else:
                    other.append(v)
            return str(total) + ("" if not other else "+" + ",".join(sorted(set(other))))

        cells = (
            key[0], str(key[1]),
            fmt(med(tps("direct")), ".0f"), fmt(med(tps("pgbouncer")), ".0f"),
            fmt(med(tps("qproxy")), ".0f"),
            fmt(ratio("qproxy", "direct"), ".3f"), fmt(ratio("pgbouncer", "direct"), ".3f"),
            fmt(ratio("qproxy", "pgbouncer"), ".3f"),
            fmt(added("pgbouncer"), ".1f"), fmt(added("qproxy"), ".1f"),
            "/".join(failed(t) for t in TARGETS),
        )
        print("| " + " | ".join(cells) + " |")
    cpu_table(runs, order)


def cpu_table(runs, order):
    """Proxy CPU per query (user + system, all threads) and context switches per query."""
    if not any(r.get(t, (None,) * 5)[3] is not None
               for rounds in runs.values() for r in rounds.values() for t in TARGETS):
        return
    print()
    print("Proxy CPU per query (µs, user + system, every thread of the proxy process) and context")
    print("switches per query, medians; qproxy/pgbouncer CPU is the median of paired ratios.")
    print()
    head = ("mode", "clients", "pgbouncer CPU µs/q", "qproxy CPU µs/q", "qproxy/pgbouncer CPU",
            "pgbouncer csw/q", "qproxy csw/q")
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join(["---"] * len(head)) + "|")
    for key in order:
        rounds = runs[key]

        def col(t, i):
            return med([r.get(t, (None,) * 5)[i] for r in rounds.values()])

        pairs = []
        for r in rounds.values():
            q, b = r.get("qproxy", (None,) * 5)[3], r.get("pgbouncer", (None,) * 5)[3]
            if q is not None and b:
                pairs.append(q / b)
        cells = (key[0], str(key[1]), fmt(col("pgbouncer", 3), ".1f"), fmt(col("qproxy", 3), ".1f"),
                 fmt(med(pairs), ".2f"), fmt(col("pgbouncer", 4), ".2f"), fmt(col("qproxy", 4), ".2f"))
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(sys.argv[1])
