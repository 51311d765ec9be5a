#!/usr/bin/env python3
"""Where the instructions per request moved between two callgrind dumps (stdlib).

usage: callgrind_diff.py BEFORE.callgrind.out AFTER.callgrind.out REQUESTS [TOP]
       callgrind_diff.py --top CALLGRIND.OUT REQUESTS [TOP]   (one dump: the TOP functions by
                                                               own Ir per request, and by Ir with
                                                               the libc calls they make)

Reads the two dumps that bench/callgrind_count.sh writes (the counted part: callgrind.out.1),
adds up each function's own Ir (files and recursion levels merged, so inlined code counts in
the function it was inlined into), charges libc's malloc/free/memcpy family to the function
that called it, sorts every function into a coarse group by its name (the GROUPS table
below) and prints, per request, each group's Ir before and after and the difference, then
the TOP functions of each group that moved most. The groups are a reading aid: a function
that inlining moved from one caller to another moves between groups too.
"""
import collections
import re
import sys

LIBC_SHARED = re.compile(
    r"^(__mem(cpy|move|set|cmp)\w*|malloc|free|realloc|calloc|_int_\w+|malloc_consolidate"
    r"|unlink_chunk.*|posix_memalign|_mid_memalign.*|__libc_\w+|tcache\w*|alloc_perturb"
    r"|__strlen\w*|cfree)$")

GROUPS = [
    ("intent line + ledger", r"ledger|proxy::intend|proxy::worst_case|jiff::|money::|catalog::"
     r"|btree|UsageRecord|BudgetState::downgrade|udivti3|default_write_fmt|core::fmt::write$"
     r"|as core::fmt::Display>::fmt"),
    ("task spawn + oneshot + scheduler", r"tokio::task::spawn|tokio::runtime::task::"
     r"|tokio::runtime::scheduler|tokio::sync::oneshot|proxy::detached|sharded_list|tokio::util::"
     r"|tokio::runtime::context"),
    ("timers", r"tokio::time|tokio::runtime::time|TokioSleep|TokioTimer|Timespec|clock_gettime"
     r"|Instant|Option<tokio::runtime::Timer>"),
    ("redaction (redact::, memchr)", r"redact::|memchr::"),
    ("hyper / http / bytes / hashing", r"hyper|http::|httparse|bytes::|http_body|futures_util"
     r"|want::|HeaderMap|hashbrown|hash::sip|BuildHasher|DefaultHasher"),
    ("response metering (meter::, serde)", r"meter::|serde_json|serde_core|Settlement"),
    ("request parse", r"request::"),
    ("rest of the sidecar (proxy, body, metrics)", r"tokenwarden_sidecar::"),
    ("tokio io / driver", r"tokio::"),
]


def parse(path):
    """-> (self Ir by function, {(caller, callee): inclusive Ir of those calls})"""
    names, own, pair = {}, collections.Counter(), collections.Counter()
    cur = cfn = None
    pending = False

    def name(spec):
        m = re.match(r"\((\d+)\)(?: (.*))?", spec)
        if not m:
            return spec
        if m.group(2) is not None:
            names[m.group(1)] = m.group(2)
        return names[m.group(1)]

    def norm(n):
        return re.sub(r"'\d+$", "", n)

    with open(path) as f:
        for ln in f:
            c = ln[:1]
            if c.isdigit() or c in "+-*":
                parts = ln.split()
                if len(parts) < 2:
                    continue
                v = int(parts[1])
                if pending:
                    if norm(cfn) != norm(cur):
                        pair[(norm(cur), norm(cfn))] += v
                    pending = False
                else:
                    own[norm(cur)] += v
            elif ln.startswith("fn="):
                cur = name(ln[3:].rstrip("\n"))
            elif ln.startswith("cfn="):
                cfn = name(ln[4:].rstrip("\n"))
            elif ln.startswith("calls="):
                pending = True
    eff = collections.Counter({f: v for f, v in own.items() if not LIBC_SHARED.match(f)})
    for (a, b), v in pair.items():
        if LIBC_SHARED.match(b) and not LIBC_SHARED.match(a):
            eff[a] += v
    return own, eff


def group(f):
    for g, rx in GROUPS:
        if re.search(rx, f):
            return g
    return "other (alloc, core, std)"


def top_of(path, n, top):
    own, eff = parse(path)
    print("Ir per request: %.0f (%d requests)" % (sum(own.values()) / n, n))
    print("-- own Ir per request (callgrind's self cost; files and recursion levels merged)")
    for f, v in own.most_common(top):
        print("%9.0f  %s" % (v / n, f[:170]))
    print("-- own Ir plus the libc malloc/free/memcpy calls it makes, per request")
    for f, v in eff.most_common(top):
        print("%9.0f  %s" % (v / n, f[:170]))


def main():
    if sys.argv[1] == "--top":
        top_of(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]) if len(sys.argv) > 4 else 40)
        return
    before, after, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    top = int(sys.argv[4]) if len(sys.argv) > 4 else 8
    ob, b = parse(before)
    oa, a = parse(after)
    print("Ir per request: before %.0f, after %.0f, %+.0f"
          % (sum(ob.values()) / n, sum(oa.values()) / n, (sum(oa.values()) - sum(ob.values())) / n))
    gb, ga = collections.Counter(), collections.Counter()
    moved = collections.defaultdict(collections.Counter)
    for f, v in b.items():
        gb[group(f)] += v
        moved[group(f)][f] -= v
    for f, v in a.items():
        ga[group(f)] += v
        moved[group(f)][f] += v
    print("%-44s %8s %8s %8s" % ("group", "before", "after", "diff"))
    for g in sorted(set(ga) | set(gb), key=lambda g: -(ga[g] - gb[g])):
        print("%-44s %8.0f %8.0f %+8.0f" % (g, gb[g] / n, ga[g] / n, (ga[g] - gb[g]) / n))
    for g in sorted(moved, key=lambda g: -abs(ga[g] - gb[g])):
        print("-- %s" % g)
        for f, v in sorted(moved[g].items(), key=lambda x: -abs(x[1]))[:top]:
            print("   %+7.0f  %s" % (v / n, f[:150]))


if __name__ == "__main__":
    main()
