#!/usr/bin/env python3
"""Turn one bench run directory (bench/out/<timestamp>) into report.md (stdlib).

usage: report.py OUT_DIR > OUT_DIR/report.md
Reads OUT_DIR/raw: oha JSON per scenario and path, procwatch samples, stream probe and
open-streams JSON, time-to-ready trials, info.env. Writes markdown to stdout.
"""
import json
import math
import os
import sys

OUT = sys.argv[1]
RAW = os.path.join(OUT, "raw")
PATHS = ["direct", "nginx-hop", "hyper-floor", "sidecar"]
FLOOR = "hyper-floor"


def read_env(p):
    d = {}
    if os.path.exists(p):
        for ln in open(p):
            k, sep, v = ln.rstrip("\n").partition("=")
            if sep:
                d[k] = v
    return d


INFO = read_env(os.path.join(RAW, "info.env"))
CLK = float(INFO.get("clk_tck") or 100)
TARGETS = INFO.get("targets", " ".join(PATHS)).split()


def jload(p):
    try:
        with open(p) as f:
            txt = f.read().strip()
        if not txt:
            return None
        try:
            return json.loads(txt)  # oha writes pretty-printed JSON
        except ValueError:
            return json.loads(txt.splitlines()[-1])  # probes write one JSON line last
    except (OSError, ValueError, IndexError):
        return None


def num(v):
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else v


# ------------------------------------------------------------------ raw readers
def load_result(scen, path):
    d = jload(os.path.join(RAW, "load", "%s--%s.json" % (scen, path)))
    if not d or "summary" not in d:
        return None
    codes = d.get("statusCodeDistribution") or {}
    ok = sum(v for k, v in codes.items() if str(k) == "200")
    bad = sum(v for k, v in codes.items() if str(k) != "200")
    errs = d.get("errorDistribution") or {}
    cut = sum(v for k, v in errs.items() if "deadline" in k.lower())
    lp = d.get("latencyPercentilesSuccessful") or d.get("latencyPercentiles") or {}

    def us(k):
        v = num(lp.get(k))
        return None if v is None else v * 1e6

    return {"ok": ok, "err": bad + sum(errs.values()) - cut, "cut": cut,
            "errors": dict(errs, **{"HTTP %s" % k: v for k, v in codes.items() if str(k) != "200"}),
            "secs": num(d["summary"].get("total")),
            "p50": us("p50"), "p99": us("p99"), "p999": us("p99.9")}


def samples(p):
    rows = []
    if os.path.exists(p):
        for ln in open(p):
            f = ln.split()
            if len(f) >= 5:
                rows.append([float(f[0])] + [int(x) for x in f[1:]])
    return rows


def proc_summary(p):
    """-> (cpu_seconds, wall_seconds, rss_peak_kb) of the proxy over a sample file, or Nones.
    cpu is None when there is no proxy (direct)."""
    rows = samples(p)
    if len(rows) < 2:
        return None, None, None
    rss = max(r[2] for r in rows)
    cpu = (rows[-1][1] - rows[0][1]) / CLK if rss else None
    return cpu, rows[-1][0] - rows[0][0], (rss or None)


def foreign_load(p):
    """% of the proxy CPU busy with anything but the proxy during the run (noise), or None."""
    rows = samples(p)
    if len(rows) < 2 or len(rows[0]) < 6:
        return None
    wall = rows[-1][0] - rows[0][0]
    if wall <= 0:
        return None
    other = (rows[-1][5] - rows[0][5]) - (rows[-1][1] - rows[0][1])
    return max(0.0, 100.0 * other / CLK / wall)


def scenarios():
    seen = []
    p = os.path.join(RAW, "load", "index.tsv")
    if os.path.exists(p):
        for ln in open(p):
            f = ln.split("\t")
            if f and f[0] not in seen:
                seen.append(f[0])
    return seen


def rss_phases():
    d = {}
    p = os.path.join(RAW, "rss.tsv")
    if os.path.exists(p):
        for ln in open(p):
            f = ln.rstrip("\n").split("\t")
            if len(f) == 3 and f[2].split():
                v = f[2].split()
                d[(f[0], f[1])] = {"rss_kb": int(v[1]), "threads": int(v[3]) if len(v) > 3 else None}
    return d


# ------------------------------------------------------------------ formatting
def us(v):
    return "–" if v is None else "%d" % round(v)


def signed(v):
    return "–" if v is None else "%+d" % round(v)


def mib(kb):
    return "–" if kb is None else "%.1f" % (kb / 1024.0)


def ms(v):
    return "–" if v is None else "%.1f" % v


def table(head, rows):
    out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def scen_title(scen):
    size, mode = scen.split("-", 1)
    body = "1 KB body" if size == "s1k" else "200 KB body"
    small, large = INFO.get("body_small_bytes"), INFO.get("body_large_bytes")
    nbytes = small if size == "s1k" else large
    st = dict(kv.split("=", 1) for kv in INFO.get("settings", "").replace('"', "").split(" ")
              if "=" in kv)
    if mode == "c1":
        n = st.get("C1_REQUESTS" if size == "s1k" else "C1_LARGE_REQUESTS", "?")
        what = "concurrency 1, %s requests back to back" % n
    elif mode == "sat":
        what = "saturation: closed loop, %s connections for %s s" % (st.get("SAT_CONC", "?"), st.get("SAT_DURATION", "?"))
    else:
        what = "open loop at %s req/s for %s s (oha -q %s --latency-correction, up to %s connections)" % (
            mode[1:], st.get("DURATION", "?"), mode[1:], st.get("CONC", "?"))
    return "%s, %s (%s bytes)" % (what, body, nbytes or "?")


# ------------------------------------------------------------------ sections
def nonstreaming(results, load_rss):
    lines = ["## Non-streaming POST /v1/chat/completions", "",
             "Latency in µs as the client saw it (open-loop runs include time queued behind the",
             "schedule). **+p50 / +p99** = this path minus `direct` in the same scenario: what the hop",
             "adds. **errors** = failed requests (non-200, connection errors; requests still in flight",
             "when a timed run ended are not errors). **CPU µs/req** = the proxy's utime+stime over the",
             "run / requests served; **CPU %** of one core; **RSS** = the proxy's peak during the run.",
             "**other on proxy CPU %** = how busy the proxy's CPU was with anything else (other",
             "processes on the machine): above a few % the row's tail latencies are not trustworthy.", ""]
    for scen in scenarios():
        rows = []
        base = results.get((scen, "direct"))
        for path in TARGETS:
            r = results.get((scen, path))
            if r is None:
                continue
            pf = os.path.join(RAW, "load", "%s--%s.proc" % (scen, path))
            cpu, wall, rss = proc_summary(pf)
            noise = foreign_load(pf)
            load_rss.append((path, rss))
            add50 = add99 = None
            if base and path != "direct":
                if r["p50"] is not None and base["p50"] is not None:
                    add50 = r["p50"] - base["p50"]
                if r["p99"] is not None and base["p99"] is not None:
                    add99 = r["p99"] - base["p99"]
            r["add50"], r["add99"] = add50, add99
            r["cpu_us"] = 1e6 * cpu / r["ok"] if (cpu is not None and r["ok"]) else None
            rows.append([path, "%.0f" % (r["ok"] / r["secs"]) if r["secs"] else "–",
                         us(r["p50"]), us(r["p99"]), us(r["p999"]), signed(add50), signed(add99),
                         "%d" % r["err"] + (" (%s)" % ", ".join("%s: %d" % kv for kv in list(r["errors"].items())[:3]) if r["err"] else ""),
                         us(r["cpu_us"]) if r["cpu_us"] is None or r["cpu_us"] >= 10 else "%.1f" % r["cpu_us"],
                         "%.0f" % (100.0 * cpu / wall) if cpu is not None and wall else "–",
                         mib(rss), "%.0f" % noise if noise is not None else "–"])
        lines += ["### %s" % scen_title(scen), "",
                  table(["path", "ok req/s", "p50", "p99", "p99.9", "+p50", "+p99", "errors",
                         "CPU µs/req", "CPU %", "RSS MiB", "other on proxy CPU %"], rows), ""]
    return lines


def stream_section(streams):
    lines = ["## Streams: time to first event", "",
             "Sequential streaming requests over one keep-alive connection, µs from writing the",
             "request. **first event** = the first SSE `data:` event (what an SDK's time to first",
             "token waits for); **first token** = the first non-empty content delta; **done** =",
             "`data: [DONE]`. *instant*: the mock sends the whole SSE body at once; *paced*: %s chunks"
             % INFO_SETTING("PACED_CHUNKS"),
             "%s ms apart. A proxy that buffers shows first event ≈ done on the paced upstream."
             % INFO_SETTING("PACED_INTERVAL_MS"),
             "*idle* (a diagnostic, not a target): the instant upstream with %s ms of idle before"
             % INFO_SETTING("IDLE_GAP_MS"),
             "each request, so every path starts cold, as it does on the paced upstream (idle %s ms"
             % INFO_SETTING("PACED_INTERVAL_MS"),
             "between chunks, a whole stream between streams). Where *idle* and *paced* add alike, the",
             "paced row measures a cold wake-up, not buffering.", ""]
    rows = []
    for kind in ("instant", "idle", "paced"):
        base = streams.get((kind, "direct"))
        for path in TARGETS:
            d = streams.get((kind, path))
            if d is None:
                continue
            a50 = a99 = None
            if base and path != "direct" and d.get("first_event_p50_us") is not None \
                    and base.get("first_event_p50_us") is not None:
                a50 = d["first_event_p50_us"] - base["first_event_p50_us"]
                a99 = d["first_event_p99_us"] - base["first_event_p99_us"]
            d["add50"] = a50
            buffered = "–"
            if d.get("first_event_p50_us") and d.get("done_p50_us") and kind == "paced":
                buffered = "yes" if d["first_event_p50_us"] > 0.5 * d["done_p50_us"] else "no"
            rows.append([path, kind, d.get("n"), d.get("errors"), d.get("events_per_stream"),
                         us(d.get("first_event_p50_us")), us(d.get("first_event_p99_us")),
                         signed(a50), signed(a99), us(d.get("first_token_p50_us")),
                         us(d.get("done_p50_us")), buffered])
    lines += [table(["path", "upstream", "n", "errors", "events", "first event p50", "p99",
                     "+p50", "+p99", "first token p50", "done p50", "buffered?"], rows), ""]
    return lines


def INFO_SETTING(k):
    for kv in INFO.get("settings", "").replace('"', "").split(" "):
        if kv.startswith(k + "="):
            return kv.split("=", 1)[1]
    return "?"


def open_section(opens):
    n = INFO_SETTING("OPEN_STREAMS")
    lines = ["## %s open streams" % n, "",
             "%s streaming requests opened at once (ramp in batches of 100), each paced %s chunks × %s ms;"
             % (n, INFO_SETTING("OPEN_CHUNKS"), INFO_SETTING("OPEN_INTERVAL_MS")),
             "clean = status 200, every event, `[DONE]`, complete body. **max open** = streams between",
             "their first event and `[DONE]` at the same moment. RSS and CPU are the proxy's.", ""]
    rows = []
    for path in TARGETS:
        d = opens.get(path)
        if d is None:
            continue
        cpu, wall, rss = proc_summary(os.path.join(RAW, "open", "%s.proc" % path))
        d["rss_kb"] = rss
        errs = d.get("errors")
        why = ", ".join("%s: %d" % kv for kv in list((d.get("error_reasons") or {}).items())[:3])
        rows.append([path, d.get("n"), d.get("ok"), "%s%s" % (errs, " (%s)" % why if errs else ""),
                     d.get("max_open"), d.get("all_open_at_s"), d.get("wall_s"),
                     mib(rss), "%.2f" % cpu if cpu is not None else "–"])
    lines += [table(["path", "streams", "clean", "errors", "max open", "max reached at s",
                     "wall s", "peak RSS MiB", "CPU s"], rows), ""]
    return lines


def footprint_section(load_rss, opens):
    ph = rss_phases()
    lines = ["## Footprint", "",
             "RSS in MiB of the proxy's process tree (nginx: master + worker). *idle* = after start",
             "(before any traffic) and after the run; *under load* = peak over the non-streaming runs.", ""]
    rows = []
    peaks = {}
    for path in TARGETS:
        if path == "direct":
            continue
        peak = max([r for p, r in load_rss if p == path and r is not None] or [None], key=lambda x: x or 0)
        peaks[path] = peak
        s, e = ph.get((path, "idle_start")), ph.get((path, "idle_end"))
        rows.append([path, mib(s and s["rss_kb"]), mib(peak),
                     mib(opens.get(path, {}).get("rss_kb")), mib(e and e["rss_kb"]),
                     (s or {}).get("threads", "–")])
    lines += [table(["path", "idle (start)", "under load (peak)", "open streams (peak)",
                     "idle (end)", "threads"], rows), ""]
    ready = {}
    rrows = []
    for path in ("sidecar", "nginx-hop"):
        d = jload(os.path.join(RAW, "ready-%s.json" % path))
        if d is None:
            continue
        ready[path] = d
        rrows.append([path, d.get("trials"), d.get("failures"), ms(d.get("min_ms")),
                      ms(d.get("p50_ms")), ms(d.get("max_ms")), ", ".join("%.1f" % t for t in d.get("ms", []))])
    if rrows:
        lines += ["### Time to ready", "",
                  "From spawn to the first 200 (sidecar: `/readyz` on the admin port; nginx hop:",
                  "`/health` through the hop), polled every %s ms with a fresh connection."
                  % (ready.get("sidecar") or ready.get("nginx-hop") or {}).get("poll_ms", "?"), "",
                  table(["process", "trials", "failed", "min ms", "p50 ms", "max ms", "all trials ms"], rrows), ""]
    return lines, peaks, ready


def check(rows, name, value, limit, ok, how):
    rows.append([name, value, limit, "–" if ok is None else ("PASS" if ok else "**FAIL**"), how])


def ratio_note(a, b, floor):
    """'ratio 1.34' for sidecar/nginx, plus the bare stack's own ratio when it was measured."""
    if a is None or not b:
        return ""
    note = "ratio %.2f" % (a / b)
    if floor is not None:
        note += "; hyper-floor alone %s µs, ratio %.2f" % (us(floor), floor / b)
    return note


def targets_section(results, streams, opens, peaks, ready):
    rows = []
    R = lambda s, p: results.get((s, p)) or {}
    side, hop = "sidecar", "nginx-hop"
    if side not in TARGETS:
        return ["## Targets", "", "The sidecar was not measured in this run: %s" %
                (INFO.get("sidecar_note") or "not in TARGETS"), ""]
    a, b = R("s1k-c1", side).get("add50"), R("s1k-c1", hop).get("add50")
    check(rows, "added p50 at c=1 (1 KB)", "%s µs (nginx %s µs)" % (us(a), us(b)), "≤ 1.2 × nginx",
          None if a is None or b is None else a <= 1.2 * b,
          ratio_note(a, b, R("s1k-c1", FLOOR).get("add50")))
    a = R("s1k-r1000", side).get("add99")
    check(rows, "added p99 at 1000 req/s (1 KB)", "%s µs" % us(a), "< 1000 µs", None if a is None else a < 1000, "")
    r = R("s1k-r5000", side)
    check(rows, "errors at 5000 req/s (1 KB)",
          "%s errors, %s ok req/s" % (r.get("err", "–"), "%.0f" % (r["ok"] / r["secs"]) if r.get("secs") else "–"),
          "0", None if not r else r["err"] == 0, "")
    a, b = R("s1k-sat", side).get("cpu_us"), R("s1k-sat", hop).get("cpu_us")
    check(rows, "CPU per request at saturation (1 KB)", "%s µs (nginx %s µs)" % (us(a), us(b)),
          "≤ 2 × nginx (≈ 50 µs)", None if a is None or b is None else a <= 2 * b,
          "ratio %.2f" % (a / b) if a is not None and b else "")
    a, a99 = R("s200k-c1", side).get("add50"), R("s200k-c1", side).get("add99")
    check(rows, "200 KB body: added p50 at c=1", "%s µs (+p99 %s µs; nginx +p50 %s µs)" % (
        us(a), us(a99), us(R("s200k-c1", hop).get("add50"))), "< 1000 µs", None if a is None else a < 1000, "")
    for kind in ("instant", "paced"):
        a = (streams.get((kind, side)) or {}).get("add50")
        b = (streams.get((kind, hop)) or {}).get("add50")
        check(rows, "added time to first event, %s stream (p50)" % kind,
              "%s µs (nginx %s µs)" % (us(a), us(b)), "≤ 1.2 × nginx",
              None if a is None or b is None else a <= 1.2 * max(b, 0),
              ratio_note(a, b, (streams.get((kind, FLOOR)) or {}).get("add50")))
    o = opens.get(side)
    if o:
        check(rows, "%s open streams" % o.get("n"), "%s clean, %s errors, max %s open at once" % (
            o.get("ok"), o.get("errors"), o.get("max_open")), "0 errors", o.get("errors") == 0, "")
    ph = rss_phases().get((side, "idle_start"))
    v = ph and ph["rss_kb"]
    check(rows, "RSS idle", "%s MiB" % mib(v), "≤ 20 MiB", None if not v else v <= 20 * 1024, "")
    v = peaks.get(side)
    check(rows, "RSS under load (non-streaming peak)", "%s MiB" % mib(v), "≤ 64 MiB",
          None if not v else v <= 64 * 1024, "")
    v = (o or {}).get("rss_kb")
    check(rows, "RSS with the open streams", "%s MiB" % mib(v), "≤ 64 MiB",
          None if not v else v <= 64 * 1024, "")
    d = ready.get(side) or {}
    check(rows, "time to ready (max of %s trials)" % d.get("trials", "?"),
          "%s ms (p50 %s ms)" % (ms(d.get("max_ms")), ms(d.get("p50_ms"))), "≤ 100 ms",
          None if d.get("max_ms") is None or d.get("failures") else d["max_ms"] <= 100, "")
    return ["## Targets (sidecar vs the nginx hop of this run)", "",
            table(["target", "measured", "limit", "result", "note"], rows), ""]


def main():
    results = {}
    for scen in scenarios():
        for path in TARGETS:
            r = load_result(scen, path)
            if r is not None:
                results[(scen, path)] = r
    streams = {}
    for kind in ("instant", "idle", "paced"):
        for path in TARGETS:
            d = jload(os.path.join(RAW, "streams", "%s--%s.json" % (kind, path)))
            if d is not None:
                streams[(kind, path)] = d
    opens = {}
    for path in TARGETS:
        d = jload(os.path.join(RAW, "open", "%s.json" % path))
        if d is not None:
            opens[path] = d

    load_rss = []
    ns = nonstreaming(results, load_rss)
    ss = stream_section(streams) if streams else []
    os_ = open_section(opens) if opens else []
    fp, peaks, ready = footprint_section(load_rss, opens)
    tg = targets_section(results, streams, opens, peaks, ready)

    head = ["# tokenwarden sidecar benchmark, %s" % INFO.get("date", "?"), "",
            "Paths: **direct** = client → fake provider; **nginx-hop** = client → nginx `proxy_pass`",
            "(1 worker) → fake provider, the floor any HTTP hop pays; **hyper-floor** = client →",
            "the sidecar's stack alone (`sidecar/examples/hyper_floor.rs`: the same tokio runtime, hyper",
            "server and pooled client, forwarding with no parsing, routing, budgets or metering) → fake",
            "provider; **sidecar** = client → tokenwarden-sidecar (`--threads 1`, passthrough policy +",
            "TokenBudget) → fake provider.",
            "The proxy under test runs alone on one CPU. Numbers from a shared VM move between",
            "runs: **compare rows of one run, never across runs.**", ""]
    meta = [["machine", INFO.get("cpu", "?")], ["network", INFO.get("netns", "?")],
            ["pinning", INFO.get("pinning", "?")], ["tools", "%s, nginx %s, %s" % (
                INFO.get("oha", "?"), INFO.get("nginx", "?"), INFO.get("python", "?"))],
            ["sidecar", "%s (built %s), git %s" % (INFO.get("sidecar_version", "?"),
                                                     INFO.get("sidecar_built", "?"), INFO.get("git", "?"))],
            ["settings", "`%s`%s" % (INFO.get("settings", ""), " (QUICK=1)" if INFO.get("quick") == "1" else "")]]
    meta.append(["scheduling", "%s, nice %s; before the run the busiest CPU was %s%% busy (load average %s)" % (
        INFO.get("scheduling", "?"), INFO.get("nice", "?"), INFO.get("busiest_cpu_before_pct", "?"),
        INFO.get("loadavg_start", "?"))])
    try:
        busy = int(INFO.get("busiest_cpu_before_pct", "0"))
    except ValueError:
        busy = 0
    if busy > 30 and "RR" not in INFO.get("scheduling", "") and "FIFO" not in INFO.get("scheduling", ""):
        meta.append(["**warning**", "other work kept the CPUs busy: tail latencies (p99, p99.9) of every "
                     "path are inflated by scheduler ticks; rerun on an idle machine or with RT=1"])
    if INFO.get("sidecar_state_dir", "yes") != "yes":
        meta.append(["**sidecar ledger file**", INFO["sidecar_state_dir"]])
    if INFO.get("sidecar_note"):
        meta.append(["note", INFO["sidecar_note"]])
    smoke = os.path.join(RAW, "smoke.tsv")
    if os.path.exists(smoke):
        meta.append(["smoke check", ", ".join(ln.strip().replace("\t", ": ") for ln in open(smoke) if ln.strip())])
    if INFO.get("sidecar_log_errors") not in (None, "", "0"):
        meta.append(["**sidecar log**", "%s ERROR and %s WARN lines while measured; first: `%s`" % (
            INFO.get("sidecar_log_errors"), INFO.get("sidecar_log_warnings"),
            INFO.get("sidecar_log_first_error", "").replace("|", "/"))])
    elif INFO.get("sidecar_log_errors") == "0":
        meta.append(["sidecar log", "no ERROR lines, %s WARN lines" % INFO.get("sidecar_log_warnings", "?")])
    led = jload(os.path.join(RAW, "sidecar-ledger.json"))
    if isinstance(led, dict):
        meta.append(["sidecar ledger", summarize_ledger(led)])
    out = head + [table(["", ""], meta), ""] + tg + ns + ss + os_ + fp
    print("\n".join(out))


def summarize_ledger(led):
    """A short line from the sidecar's /ledger JSON: how many requests it metered."""
    def find(d, key):
        if isinstance(d, dict):
            if key in d and isinstance(d[key], (int, float)):
                return d[key]
            for v in d.values():
                r = find(v, key)
                if r is not None:
                    return r
        elif isinstance(d, list):
            tot = [find(v, key) for v in d]
            tot = [t for t in tot if t is not None]
            return sum(tot) if tot else None
        return None
    total = led.get("total") if isinstance(led.get("total"), dict) else None
    reqs = find(total, "requests") if total else find(led.get("models", led), "requests")
    cost = (total or {}).get("cost_usd") or (total or {}).get("cost")
    return "%s requests metered%s (`GET /ledger` after the run)" % (
        reqs if reqs is not None else "?", ", cost %s" % cost if cost is not None else "")


if __name__ == "__main__":
    main()
