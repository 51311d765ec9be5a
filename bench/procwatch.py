#!/usr/bin/env python3
"""CPU time and RSS of a process and its descendants, from /proc (stdlib).

procwatch.py once PID
    -> "ticks rss_kb nprocs nthreads"
procwatch.py watch PID INTERVAL_S MAX_S [CPU,CPU...]
    -> "unix_time ticks rss_kb nprocs nthreads [busy_ticks_of_each_CPU...]" every INTERVAL_S
       for at most MAX_S seconds; on SIGTERM one last sample, then exit. PID "-" samples only
       the CPUs. busy = all but idle and iowait in /proc/stat: with the proxy's own ticks it
       tells how much else ran on the proxy's CPU during a run (noise from other work).

ticks = utime + stime (fields 14 and 15 of /proc/<pid>/stat, in 1/CLK_TCK s) summed over the
tree; a process's own counters include its exited threads. rss_kb = VmRSS summed over the tree.
CPU per request = tick delta across a load run / requests served.
"""
import os
import signal
import sys
import time

PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


def stat_fields(pid):
    with open("/proc/%d/stat" % pid, "rb") as f:
        s = f.read()
    return s[s.rindex(b")") + 2:].split()  # fields from 3 (state) on


def tree(root):
    children = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                children.setdefault(int(stat_fields(int(d))[1]), []).append(int(d))
            except (OSError, IndexError, ValueError):
                pass
    out, i = [root], 0
    while i < len(out):
        out.extend(children.get(out[i], []))
        i += 1
    return out


def cpu_busy(cpus):
    busy = {}
    with open("/proc/stat") as f:
        for ln in f:
            if ln.startswith("cpu") and ln[3].isdigit():
                v = ln.split()
                n = [int(x) for x in v[1:]]
                busy[int(v[0][3:])] = sum(n[:8]) - n[3] - n[4]  # minus idle, iowait
    return tuple(busy.get(c, 0) for c in cpus)


def sample(root):
    ticks = rss = procs = threads = 0
    for pid in (tree(root) if root else []):
        try:
            f = stat_fields(pid)
            with open("/proc/%d/statm" % pid) as fh:
                pages = int(fh.read().split()[1])
        except (OSError, IndexError, ValueError):
            continue
        ticks += int(f[11]) + int(f[12])   # utime, stime
        threads += int(f[17])              # num_threads
        rss += pages * PAGE_KB
        procs += 1
    return ticks, rss, procs, threads


class Stop(Exception):
    pass


def main():
    mode, root = sys.argv[1], (0 if sys.argv[2] == "-" else int(sys.argv[2]))
    if mode == "once":
        print("%d %d %d %d" % sample(root))
        return
    interval, max_s = float(sys.argv[3]), float(sys.argv[4])
    cpus = [int(c) for c in sys.argv[5].split(",")] if len(sys.argv) > 5 else []

    def line():
        v = (time.time(),) + sample(root) + cpu_busy(cpus)
        return "%.3f" % v[0] + "".join(" %d" % x for x in v[1:])

    def on_term(*_):
        raise Stop

    signal.signal(signal.SIGTERM, on_term)
    end = time.monotonic() + max_s
    try:
        while time.monotonic() < end:
            print(line(), flush=True)
            time.sleep(interval)
    except Stop:
        pass
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    print(line(), flush=True)


if __name__ == "__main__":
    main()
