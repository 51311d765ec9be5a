#!/usr/bin/env python3
"""CPU time and RSS of a process and its descendants, from /proc (stdlib).

procwatch.py once PID
    -> "ticks rss_kb nprocs nthreads"
procwatch.py watch PID INTERVAL_S MAX_S
    -> "unix_time ticks rss_kb nprocs nthreads" every INTERVAL_S for at most MAX_S seconds;
       on SIGTERM one last sample, then exit.

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


def sample(root):
    ticks = rss = procs = threads = 0
    for pid in tree(root):
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
    mode, root = sys.argv[1], int(sys.argv[2])
    if mode == "once":
        print("%d %d %d %d" % sample(root))
        return
    interval, max_s = float(sys.argv[3]), float(sys.argv[4])

    def on_term(*_):
        raise Stop

    signal.signal(signal.SIGTERM, on_term)
    end = time.monotonic() + max_s
    try:
        while time.monotonic() < end:
            print("%.3f %d %d %d %d" % ((time.time(),) + sample(root)), flush=True)
            time.sleep(interval)
    except Stop:
        pass
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    print("%.3f %d %d %d %d" % ((time.time(),) + sample(root)), flush=True)


if __name__ == "__main__":
    main()
