#!/usr/bin/env python3
# EXPERIMENT (issue 16, not the product's bench): does splicing a relay's two sockets with an eBPF
# sockmap bring passthrough to >= 0.6 of direct requests/s? The bench's conditions: HAProxy as the
# small-response TLS upstream (one thread, `http-request return`), h2load --h1 -c 64 -t 1 -m 1 over
# TLS on loopback, the 100 MiB body from a node HTTPS server; paths alternated in every round:
# direct, the C relay copying in user space, the same relay spliced with an sk_skb verdict program
# (BPF_SK_SKB_VERDICT) and with a stream verdict (BPF_SK_SKB_STREAM_VERDICT), and for reference a
# bare HAProxy tcp-mode relay with the product's relay settings (2 threads, splice-auto,
# tune.recv_enough 1, tune.pipesize 1 MiB; no SNI inspection, no log). Also per round: p50 latency
# of 2,000 sequential keep-alive requests on each path.
# CPU per request from /proc/<pid>/stat (kernel threads: schedstat) in a window inside h2load's measured seconds,
# for h2load, the upstream, the relay, and every kworker and ksoftirqd thread on the machine (the
# sockmap's egress redirect runs in a kworker: sk_psock_backlog); the kernel here has no
# IRQ_TIME_ACCOUNTING, so softirq work run on a process's way out of a syscall is in that process.
# Usage (root): make && python3 run.py [rounds] ; env SOCKMAP_SECONDS (default 4), SOCKMAP_BODY=0.
import os, re, signal, statistics, subprocess, sys, tempfile, time

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, ".output")
ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 6
SECONDS = int(os.environ.get("SOCKMAP_SECONDS", "4"))
BODY = os.environ.get("SOCKMAP_BODY", "1") != "0"
PORT, BIGPORT = 18443, 18444
UP, BIGUP = "127.0.0.2", "127.0.0.5"
PATHS = {"direct": UP, "haproxy": "127.0.0.9", "copy": "127.0.0.6", "verdict": "127.0.0.7", "stream": "127.0.0.8"}
NAME = "small.bench.test"


def proc_s(pid):
    """A process's user + system CPU seconds, exited threads included (/proc/<pid>/stat)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            v = f.read().rsplit(")", 1)[1].split()
        return (int(v[11]) + int(v[12])) / os.sysconf("SC_CLK_TCK")
    except OSError:
        return 0.0


def kernel_threads_ns():
    """CPU ns of every kworker and ksoftirqd thread."""
    kw = ks = 0
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open(f"/proc/{p}/comm") as f:
                comm = f.read()
            if comm.startswith("kworker"):
                with open(f"/proc/{p}/schedstat") as f:
                    kw += int(f.read().split()[0])
            elif comm.startswith("ksoftirqd"):
                with open(f"/proc/{p}/schedstat") as f:
                    ks += int(f.read().split()[0])
        except OSError:
            pass
    return kw, ks


def machine_busy_s():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    busy = sum(v) - v[3] - v[4]  # minus idle, iowait
    return busy / os.sysconf("SC_CLK_TCK"), v[6] / os.sysconf("SC_CLK_TCK")  # busy, softirq


def snapshot(pids):
    kw, ks = kernel_threads_ns()
    busy, sirq = machine_busy_s()
    return {"t": time.monotonic(), **{k: proc_s(p) for k, p in pids.items()}, "kworker": kw / 1e9,
            "ksoftirqd": ks / 1e9, "machine": busy, "softirq": sirq}


def h2load(to, args, url, pids):
    cmd = ["h2load", "--h1", f"--connect-to={to}", *args, url]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    window = None
    if "-D" in args:
        time.sleep(1.6)
        a = snapshot({**pids, "client": p.pid})
        time.sleep(SECONDS - 0.4)
        b = snapshot({**pids, "client": p.pid})
        window = {k: b[k] - a[k] for k in a}
    out = p.communicate()[0]
    m = re.search(r"finished in ([\d.]+)(m?s), ([\d.]+) req/s, ([\d.]+)([KMG]?)B/s", out)
    r = re.search(r"(\d+) succeeded, (\d+) failed", out)
    if not m or not r or int(r.group(2)) > 0:
        raise RuntimeError(out)
    unit = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3}[m.group(5)]
    return float(m.group(3)), float(m.group(4)) * unit, window, out


def main():
    subprocess.run(["make", "-s", "-C", HERE], check=True)
    w = tempfile.mkdtemp(prefix="sockmap-exp-")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", f"{w}/k.pem", "-out", f"{w}/c.pem", "-days", "2", "-subj", f"/CN={NAME}",
                    "-addext", f"subjectAltName=DNS:{NAME},DNS:big.bench.test"], check=True, capture_output=True)
    with open(f"{w}/up.pem", "w") as f:
        f.write(open(f"{w}/c.pem").read() + open(f"{w}/k.pem").read())
    with open(f"{w}/up.cfg", "w") as f:
        f.write("\n".join(["global", "  nbthread 1", "  maxconn 4096", "defaults", "  mode http",
                           "  timeout connect 5s", "  timeout client 60s", "  timeout server 60s",
                           "  timeout http-keep-alive 60s", "frontend up",
                           f"  bind {UP}:{PORT} ssl crt {w}/up.pem alpn http/1.1",
                           '  http-request return status 200 content-type text/plain string "ok\\n"', ""]))
    with open(f"{w}/relay.cfg", "w") as f:
        f.write("\n".join(["global", "  nbthread 2", "  maxconn 4096", "  tune.recv_enough 1",
                           "  tune.pipesize 1048576", "defaults", "  mode tcp", "  timeout connect 5s",
                           "  timeout client 60s", "  timeout server 60s",
                           "frontend small", f"  bind {PATHS['haproxy']}:{PORT}", "  default_backend small",
                           "frontend big", f"  bind {PATHS['haproxy']}:{BIGPORT}", "  default_backend big",
                           "backend small", "  option splice-auto", f"  server s {UP}:{PORT}",
                           "backend big", "  option splice-auto", f"  server s {BIGUP}:{BIGPORT}", ""]))
    big_js = (f"const b=Buffer.alloc(100*1024*1024,120);require('https').createServer({{key:require('fs')"
              f".readFileSync('{w}/k.pem'),cert:require('fs').readFileSync('{w}/c.pem')}},(q,s)=>{{s.writeHead"
              f"(200,{{'content-length':b.length}});s.end(b)}}).listen({BIGPORT},'{BIGUP}')")
    procs = {"upstream": subprocess.Popen(["haproxy", "-db", "-f", f"{w}/up.cfg"]),
             "bigup": subprocess.Popen(["node", "-e", big_js]),
             "haproxy": subprocess.Popen(["haproxy", "-db", "-f", f"{w}/relay.cfg"])}
    relays = {}
    for mode in ("copy", "verdict", "stream"):
        for port, up in ((PORT, UP), (BIGPORT, BIGUP)):
            relays[(mode, port)] = subprocess.Popen(
                [f"{OUT}/relay", mode, PATHS[mode], str(port), up, str(port), f"{OUT}/splice.bpf.o"],
                stderr=open(f"{w}/relay-{mode}-{port}.log", "w"))
    try:
        time.sleep(1.5)
        load = ["-c", "64", "-t", "1", "-m", "1", "-D", str(SECONDS), "--warm-up-time", "1"]
        rows = {k: [] for k in PATHS}
        body = {k: [] for k in PATHS}
        lat = {k: [] for k in PATHS}
        print(f"uptime before: {open('/proc/loadavg').read().strip()}", flush=True)
        for rnd in range(ROUNDS):
            d = None
            # direct first (every ratio is over it), then the relays in an order rotated every round,
            # so no relay always runs furthest from its direct pass
            relays_order = [k for k in PATHS if k != "direct"]
            k0 = rnd % len(relays_order)
            order = ["direct", *relays_order[k0:], *relays_order[:k0]]
            for kind in order:
                to = PATHS[kind]
                pids = {"upstream": procs["upstream"].pid}
                if kind != "direct":
                    pids["relay"] = (procs["haproxy"] if kind == "haproxy" else relays[(kind, PORT)]).pid
                rate, _, win, _ = h2load(f"{to}:{PORT}", load, f"https://{NAME}:{PORT}/", pids)
                n = rate * win["t"]
                per = {k: win[k] / n * 1e6 for k in win if k != "t"}
                path = per["client"] + per["upstream"] + per.get("relay", 0) + per["kworker"] + per["ksoftirqd"]
                if kind == "direct":
                    d = (rate, path)
                rows[kind].append({"rate": rate, "ratio": rate / d[0], "cpuInv": d[1] / path, **per, "path": path})
                print(f"round {rnd} {kind:8s} {rate:8.0f} req/s ratio {rate / d[0]:.3f} | us/req client "
                      f"{per['client']:.1f} upstream {per['upstream']:.1f} relay {per.get('relay', 0):.1f} kworker "
                      f"{per['kworker']:.1f} ksoftirqd {per['ksoftirqd']:.1f} path {path:.1f} (inv {d[1] / path:.3f})"
                      f" | machine {per['machine']:.1f} softirq {per['softirq']:.1f} | load "
                      f"{os.getloadavg()[0]:.1f}", flush=True)
            for kind, to in PATHS.items():
                log = f"{w}/lat.log"
                h2load(f"{to}:{PORT}", ["-c", "1", "-t", "1", "-n", "2000", f"--log-file={log}"],
                       f"https://{NAME}:{PORT}/", {})
                us = sorted(int(l.split("\t")[2]) for l in open(log) if l.strip())
                lat[kind].append(us[len(us) // 2] / 1000)
            print(f"round {rnd} latency p50 ms: " + ", ".join(f"{k} {v[-1]:.3f}" for k, v in lat.items()), flush=True)
            if BODY:
                db = None
                for kind, to in PATHS.items():
                    to_ = BIGUP if kind == "direct" else to
                    pre = {"client": 0.0}
                    pids = {"bigup": procs["bigup"].pid}
                    if kind != "direct":
                        pids["relay"] = (procs["haproxy"] if kind == "haproxy" else relays[(kind, BIGPORT)]).pid
                    a = snapshot(pids)
                    t0 = time.monotonic()
                    rate, bps, _, out = h2load(f"{to_}:{BIGPORT}", ["-c", "1", "-t", "1", "-n", "3"],
                                               f"https://big.bench.test:{BIGPORT}/", pids)
                    b = snapshot(pids)
                    mib = 300.0
                    per = {k: (b[k] - a[k]) / mib * 1e3 for k in a if k != "t"}
                    if kind == "direct":
                        db = bps
                    body[kind].append({"bps": bps, "ratio": bps / db, **per})
                    print(f"round {rnd} body {kind:8s} {bps / 2**20:8.0f} MiB/s ratio {bps / db:.3f} | ms/MiB upstream "
                          f"{per['bigup']:.2f} relay {per.get('relay', 0):.2f} kworker {per['kworker']:.2f} "
                          f"ksoftirqd {per['ksoftirqd']:.2f} machine {per['machine']:.2f}", flush=True)
        print(f"uptime after: {open('/proc/loadavg').read().strip()}")
        print("medians (small requests; ratio = pair ratio vs the direct pass of the same round):")
        for kind, rs in rows.items():
            med = {k: statistics.median(r[k] for r in rs) for k in rs[0]}
            print(f"  {kind:8s} ratio {med['ratio']:.3f} (min {min(r['ratio'] for r in rs):.3f} max "
                  f"{max(r['ratio'] for r in rs):.3f}) rate {med['rate']:.0f} | us/req client {med['client']:.1f} "
                  f"upstream {med['upstream']:.1f} relay {med.get('relay', 0):.1f} kworker {med['kworker']:.1f} "
                  f"ksoftirqd {med['ksoftirqd']:.1f} path {med['path']:.1f} inv {med['cpuInv']:.3f} machine "
                  f"{med['machine']:.1f}")
        print("latency p50 medians (ms): " + ", ".join(f"{k} {statistics.median(v):.3f}" for k, v in lat.items()))
        if BODY:
            print("medians (100 MiB body):")
            for kind, rs in body.items():
                med = {k: statistics.median(r[k] for r in rs) for k in rs[0]}
                print(f"  {kind:8s} ratio {med['ratio']:.3f} {med['bps'] / 2**20:.0f} MiB/s | ms/MiB upstream "
                      f"{med['bigup']:.2f} relay {med.get('relay', 0):.2f} kworker {med['kworker']:.2f} machine "
                      f"{med['machine']:.2f}")
    finally:
        for p in list(relays.values()):
            p.send_signal(signal.SIGTERM)
        for p in list(relays.values()) + list(procs.values()):
            if p.poll() is None and p not in relays.values():
                p.terminate()
            p.wait(timeout=10)
        for k, p in relays.items():
            print(k, open(f"{w}/relay-{k[0]}-{k[1]}.log").read().strip().splitlines()[-1])
        subprocess.run(["rm", "-rf", w])


main()
