#!/usr/bin/env python3
"""Figures of the live node: polling, push and MQTT throughput, idle cost.

Benchmarks, not tests: they print figures and assert nothing. Every process is real
(`edgeflow devices` as the fleet, `edgeflow serve` as the node, mosquitto as the broker)
on 127.0.0.1. The node's CPU time and peak RSS come from the kernel (wait4), so they are
the node's own, not the simulator's that shares the machine.

    cargo build --release
    python3 benches/live.py [--bin target/release/edgeflow] [poll idle empty push mqtt control]
    python3 benches/live.py --base-bin OLD_BUILD wal      # cost of the write-ahead log
    python3 benches/live.py recovery                      # restart after kill -9
    python3 benches/live.py cluster                       # 2 processes x 1 worker vs 1 x 2
"""

import argparse
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what, condition, timeout=120.0):
    deadline = time.time() + timeout
    while not condition():
        if time.time() > deadline:
            sys.exit(f"timed out waiting for {what}")
        time.sleep(0.05)


def get_json(url):
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return json.load(r)
    except OSError:
        return None


class Node:
    """`edgeflow serve` with its rusage collected at exit."""

    def __init__(self, binary, query, workers, extra=(), directory=None):
        self.dir = directory or tempfile.mkdtemp(prefix="edgeflow-bench-")
        self.port = free_port()
        self.out = open(os.path.join(self.dir, "node.out"), "w+")
        self.proc = subprocess.Popen(
            [binary, "serve", *([query] if query else []), "--listen", f"127.0.0.1:{self.port}", "--output",
             os.path.join(self.dir, "out"), "--no-sync", "--json", "--workers", str(workers),
             *extra],
            stdout=self.out, stderr=subprocess.DEVNULL)
        self.started = time.time()
        wait_for("the node", lambda: get_json(f"http://127.0.0.1:{self.port}/api/v1/ingest"))

    def received(self, table="readings"):
        status = get_json(f"http://127.0.0.1:{self.port}/api/v1/ingest") or {}
        return status.get("tables", {}).get(table, {}).get("received", 0)

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        _, status, usage = os.wait4(self.proc.pid, 0)
        wall = time.time() - self.started
        self.out.seek(0)
        summary = json.load(self.out)
        return {
            "wall_s": wall,
            "cpu_s": usage.ru_utime + usage.ru_stime,
            "peak_rss_mb": usage.ru_maxrss / 1024,
            "summary": summary,
        }


def fleet(binary, devices, tmp):
    port_file = os.path.join(tmp, "fleet.port")
    proc = subprocess.Popen(
        [binary, "devices", "--devices", str(devices), "--listen", "127.0.0.1:0",
         "--port-file", port_file], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for("the fleet", lambda: os.path.exists(port_file))
    with open(port_file) as f:
        return proc, int(f.read().strip())


POLL = """CREATE TABLE readings (device_id TEXT, ts TIMESTAMP, bytes_in BIGINT, bytes_out BIGINT,
                       packets BIGINT, latency_ms DOUBLE, interval_ms BIGINT)
WITH (connector = 'http_poll', url = 'http://127.0.0.1:{port}/device/{{id}}', ids = '0..{last}',
      interval = '10s', timeout = '2s', concurrency = '64',
      counters = 'bytes_in,bytes_out,packets', event_time = 'ts', max_out_of_orderness = '5s');
SELECT device_id, window_start, window_end, COUNT(*) AS polls, SUM(bytes_in) AS bytes_in,
       SUM(bytes_out) AS bytes_out, SUM(interval_ms) AS ms
FROM TUMBLE(readings, ts, INTERVAL '1' MINUTE) GROUP BY device_id, window_start, window_end;
"""

PUSH = """CREATE TABLE readings (device_id TEXT, ts TIMESTAMP, bytes_in BIGINT, bytes_out BIGINT,
                       packets BIGINT, latency_ms DOUBLE)
WITH (connector = '{connector}', {options} event_time = 'ts', max_out_of_orderness = '5s');
SELECT device_id, window_start, window_end, COUNT(*) AS readings, SUM(bytes_in) AS bytes_in,
       SUM(bytes_out) AS bytes_out, MAX(bytes_in) AS max_in, AVG(latency_ms) AS latency
FROM TUMBLE(readings, ts, INTERVAL '1' MINUTE) GROUP BY device_id, window_start, window_end;
"""


# One client pushing as fast as it can is a gateway, not a device: without this the
# per-client limit (200 requests/s by default) is what the figure measures.
UNLIMITED = ("--ingest-rate-limit", "0")


def write(tmp, name, text):
    path = os.path.join(tmp, f"{name}.sql")
    with open(path, "w") as f:
        f.write(text)
    return path


def poll(binary, devices, seconds, workers):
    tmp = tempfile.mkdtemp(prefix="edgeflow-bench-")
    sim, port = fleet(binary, devices, tmp)
    query = write(tmp, "polled", POLL.format(port=port, last=devices - 1))
    node = Node(binary, query, workers)
    time.sleep(seconds)
    result = node.stop()
    sim.terminate()
    sim.wait()
    report = result["summary"]["node"]["polls"]["readings"]
    print(json.dumps({
        "figure": f"poll {devices} devices every 10s for {seconds}s, {workers} worker(s)",
        "node_cpu_percent_of_a_core": round(100 * result["cpu_s"] / result["wall_s"], 2),
        "node_peak_rss_mb": round(result["peak_rss_mb"], 1),
        "rounds": report["rounds"], "polls_ok": report["polls_ok"],
        "polls_failed": report["polls_failed"], "polls_skipped": report["polls_skipped"],
        "round_p99_ms": report["round_p99_ms"], "poll_p50_ms": report["poll_p50_ms"],
        "poll_p99_ms": report["poll_p99_ms"],
    }))


def push(binary, readings, workers):
    tmp = tempfile.mkdtemp(prefix="edgeflow-bench-")
    query = write(tmp, "pushed", PUSH.format(connector="http_push", options=""))
    node = Node(binary, query, workers, UNLIMITED)
    start = time.time()
    client = subprocess.run(
        [binary, "devices", "--devices", "10000", "--push",
         f"http://127.0.0.1:{node.port}/ingest/readings", "--batch", "1000",
         "--rate", "100000000", "--readings", str(readings), "--json"],
        capture_output=True, text=True, check=True)
    wait_for("every pushed reading", lambda: node.received() >= readings)
    elapsed = time.time() - start
    result = node.stop()
    sent = json.loads(client.stdout)
    print(json.dumps({
        "figure": f"push {readings} readings in 1,000-line NDJSON batches, {workers} worker(s)",
        "readings_per_s": round(readings / elapsed),
        "client_readings_per_s": sent.get("readings_per_s"),
        "node_cpu_s": round(result["cpu_s"], 2),
        "readings_per_node_cpu_s": round(readings / max(result["cpu_s"], 1e-9)),
        "node_peak_rss_mb": round(result["peak_rss_mb"], 1),
    }))


def loopback_bytes():
    """Bytes sent over the loopback interface so far."""
    with open("/proc/net/dev") as f:
        for line in f:
            name, _, rest = line.partition(":")
            if name.strip() == "lo":
                return int(rest.split()[8])
    return 0


def cluster_push(binary, readings):
    """Push into one process with 2 workers, against two processes with 1 worker each.

    Two pushing clients either way (half the readings each; in the cluster one per
    process). The rate counts readings the query has processed (read by its workers),
    not just received. Loopback carries the pushes in both set-ups, so the difference
    of the loopback bytes, counted from just before the clients start to the nodes'
    exit, is what the cluster adds (its exchange, progress and lockstep) plus the
    status polls of this script, which ask two ports instead of one."""
    rows = {}
    for processes in (1, 2):
        tmp = tempfile.mkdtemp(prefix="edgeflow-bench-")
        query = write(tmp, "pushed", PUSH.format(connector="http_push", options=""))
        hosts = os.path.join(tmp, "hosts")
        with open(hosts, "w") as f:
            f.write("".join(f"127.0.0.1:{free_port()}\n" for _ in range(processes)))
        ports = [free_port() for _ in range(processes)]
        nodes = []
        for i in range(processes):
            cluster = (["--processes", str(processes), "--process", str(i), "--hostfile", hosts]
                       if processes > 1 else [])
            nodes.append(subprocess.Popen(
                [binary, "serve", query, "--listen", f"127.0.0.1:{ports[i]}", "--output",
                 os.path.join(tmp, f"out{i}"), "--no-sync", "--workers",
                 str(2 // processes), *UNLIMITED, *cluster],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        for port in ports:
            wait_for("the node", lambda: get_json(f"http://127.0.0.1:{port}/api/v1/ingest"))
        processed = lambda: sum(
            ((get_json(f"http://127.0.0.1:{p}/api/v1/queries/pushed") or {})
             .get("figures", {}).get("readings", 0)) for p in ports)
        before = loopback_bytes()
        start = time.time()
        clients = [subprocess.Popen(
            [binary, "devices", "--devices", "10000", "--seed", str(c + 1), "--push",
             f"http://127.0.0.1:{ports[c % processes]}/ingest/readings", "--batch", "1000",
             "--rate", "100000000", "--readings", str(readings // 2), "--json"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for c in range(2)]
        for client in clients:
            client.wait()
        wait_for("every pushed reading", lambda: processed() >= readings // 2 * 2)
        elapsed = time.time() - start
        # Process 0 leads the stop of a cluster.
        nodes[0].send_signal(signal.SIGTERM)
        cpu = 0.0
        for proc in nodes:
            _, status, usage = os.wait4(proc.pid, 0)
            if os.waitstatus_to_exitcode(status) != 0:
                sys.exit(f"a node ended with {os.waitstatus_to_exitcode(status)}: no figure")
            cpu += usage.ru_utime + usage.ru_stime
        rows[processes] = {
            "readings_per_s": readings // 2 * 2 / elapsed,
            "node_cpu_s": cpu,
            "loopback_bytes": loopback_bytes() - before,
        }
    one, two = rows[1], rows[2]
    print(json.dumps({
        "figure": f"push {readings} readings from two clients: 1 process x 2 workers, 2 processes x 1 worker",
        "readings_per_s_1x2": round(one["readings_per_s"]),
        "readings_per_s_2x1": round(two["readings_per_s"]),
        "ratio_2x1_over_1x2": round(two["readings_per_s"] / one["readings_per_s"], 3),
        "node_cpu_s_1x2": round(one["node_cpu_s"], 2),
        "node_cpu_s_2x1": round(two["node_cpu_s"], 2),
        "cluster_bytes_per_reading": round((two["loopback_bytes"] - one["loopback_bytes"]) / readings, 2),
    }))


def pushed(binary, node, readings, concurrency):
    """Pushes `readings` with `concurrency` batches in flight; the client's summary."""
    client = subprocess.run(
        [binary, "devices", "--devices", "10000", "--push",
         f"http://127.0.0.1:{node.port}/ingest/readings", "--batch", "1000",
         "--concurrency", str(concurrency), "--rate", "100000000",
         "--readings", str(readings), "--json"],
        capture_output=True, text=True, check=True)
    return json.loads(client.stdout)


def wal_cost(binary, base, readings, pairs):
    """Push throughput and acknowledgement latency: a build without the write-ahead log
    (`base`), and this one with `--wal-fsync always` and `10ms`, A B C in turn."""
    tmp = tempfile.mkdtemp(prefix="edgeflow-bench-")
    query = write(tmp, "pushed", PUSH.format(connector="http_push", options=""))
    modes = [("always", binary, ("--wal-fsync", "always")),
             ("10ms", binary, ("--wal-fsync", "10ms"))]
    if base:
        modes.insert(0, ("no log (base)", base, ()))
    for concurrency in (1, 8):
        results = {name: [] for name, _, _ in modes}
        for _ in range(pairs):
            for name, build, extra in modes:
                node = Node(build, query, 2, UNLIMITED + extra)
                start = time.time()
                sent = pushed(binary, node, readings, concurrency)
                wait_for("every pushed reading", lambda: node.received() >= readings)
                elapsed = time.time() - start
                result = node.stop()
                results[name].append((readings / elapsed, sent.get("ack_p50_ms"),
                                      sent.get("ack_p99_ms"), result["cpu_s"]))
        for name, runs in results.items():
            print(json.dumps({
                "figure": f"push {readings} readings, 1,000-line batches, {concurrency} in flight, "
                          f"2 workers: {name}",
                "readings_per_s": [round(r) for r, _, _, _ in runs],
                "node_cpu_s": [round(c, 2) for _, _, _, c in runs],
                "ack_p50_ms": [round(p, 2) for _, p, _, _ in runs],
                "ack_p99_ms": [round(p, 2) for _, _, p, _ in runs],
            }))


def recovery(binary, readings_list):
    """Time from the start of a node killed with SIGKILL to every reading of its log being
    processed again, with no checkpoint since the readings came (`--checkpoint-every 1h`)."""
    for readings in readings_list:
        tmp = tempfile.mkdtemp(prefix="edgeflow-bench-")
        query = write(tmp, "pushed", PUSH.format(connector="http_push", options=""))
        extra = UNLIMITED + ("--checkpoint-every", "1h")
        node = Node(binary, query, 2, extra, directory=tmp)
        pushed(binary, node, readings, 4)
        wait_for("every pushed reading", lambda: node.received() >= readings)
        node.proc.kill()
        node.proc.wait()
        log_bytes = sum(os.path.getsize(os.path.join(dp, f))
                        for dp, _, files in os.walk(os.path.join(tmp, "out", "_state", "_wal"))
                        for f in files)
        started = time.time()
        node = Node(binary, query, 2, extra, directory=tmp)
        up = time.time() - started
        # Devices go on pushing after the restart.
        pushed(binary, node, 1000, 1)
        wait_for("the replay", lambda: (get_json(
            f"http://127.0.0.1:{node.port}/api/v1/queries/pushed") or {}).get(
            "figures", {}).get("readings", 0) >= readings + 1000, timeout=600)
        replayed = time.time() - started
        node.stop()
        print(json.dumps({
            "figure": f"restart after kill -9 with {readings} readings of 10,000 devices in the log",
            "log_mb": round(log_bytes / 1e6, 1),
            "answering_s": round(up, 2),
            "replayed_s": round(replayed, 2),
            "replayed_readings_per_s": round(readings / replayed),
        }))


def mqtt(binary, readings, qos):
    tmp = tempfile.mkdtemp(prefix="edgeflow-bench-")
    port = free_port()
    conf = os.path.join(tmp, "mosquitto.conf")
    with open(conf, "w") as f:
        f.write(f"listener {port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 10000000\nuser root\n")
    broker = subprocess.Popen(["mosquitto", "-c", conf], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    wait_for("mosquitto", lambda: socket.socket().connect_ex(("127.0.0.1", port)) == 0)
    publish = [binary, "devices", "--devices", "1000", "--mqtt", f"mqtt://127.0.0.1:{port}",
               "--qos", str(qos), "--rate", "100000000", "--readings", str(readings)]
    # The broker's own ceiling: a plain subscriber that only counts.
    sub = subprocess.Popen(["mosquitto_sub", "-h", "127.0.0.1", "-p", str(port), "-q", str(qos),
                            "-t", "devices/+/traffic", "-C", str(readings)],
                           stdout=subprocess.DEVNULL)
    time.sleep(0.5)
    start = time.time()
    subprocess.run(publish + ["--client-id", "bench-pub-1"], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    sub.wait()
    ceiling = readings / (time.time() - start)
    options = (f"broker = 'mqtt://127.0.0.1:{port}', topic = 'devices/+/traffic', "
               f"qos = '{qos}', client_id = 'bench-node-{qos}',")
    query = write(tmp, "mqtt_in", PUSH.format(connector="mqtt", options=options))
    node = Node(binary, query, 2)
    wait_for("the node's subscription", lambda: (get_json(
        f"http://127.0.0.1:{node.port}/api/v1/ingest") or {}).get("tables", {}).get(
            "readings", {}).get("source", {}).get("connected"))
    start = time.time()
    subprocess.run(publish + ["--client-id", "bench-pub-2"], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for("every MQTT reading", lambda: node.received() >= readings, timeout=600)
    elapsed = time.time() - start
    result = node.stop()
    broker.terminate()
    broker.wait()
    print(json.dumps({
        "figure": f"mqtt {readings} readings, one per message, QoS {qos}",
        "node_readings_per_s": round(readings / elapsed),
        "mosquitto_sub_readings_per_s": round(ceiling),
        "node_cpu_s": round(result["cpu_s"], 2),
    }))


def api(port, method, path, body=None):
    """One API call on a fresh connection: (status, JSON, seconds)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    start = time.perf_counter()
    conn.request(method, path, body=json.dumps(body) if body is not None else None,
                 headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    data = response.read()
    elapsed = time.perf_counter() - start
    conn.close()
    try:
        return response.status, json.loads(data), elapsed
    except ValueError:
        return response.status, data.decode(errors="replace"), elapsed


def quantile(samples, q):
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, int(q * len(ordered) + 0.999999) - 1))]


def scraped_push(binary, readings, scrape):
    """Readings/s of a push run; with `scrape`, /metrics and the query's status route
    are each fetched 10 times a second meanwhile. Returns (readings/s, API latencies)."""
    tmp = tempfile.mkdtemp(prefix="edgeflow-bench-")
    query = write(tmp, "pushed", PUSH.format(connector="http_push", options=""))
    node = Node(binary, query, 2, UNLIMITED)
    latencies, done = [], threading.Event()

    def scraper(path):
        # One kept-alive connection per scraper, as Prometheus and the page's browser do.
        conn = http.client.HTTPConnection("127.0.0.1", node.port, timeout=30)
        while not done.is_set():
            started = time.perf_counter()
            conn.request("GET", path)
            response = conn.getresponse()
            response.read()
            if response.status == 200:
                latencies.append(time.perf_counter() - started)
            done.wait(max(0.0, 0.1 - (time.perf_counter() - started)))
        conn.close()

    threads = [threading.Thread(target=scraper, args=(p,))
               for p in ("/metrics", "/api/v1/queries/pushed")] if scrape else []
    for t in threads:
        t.start()
    start = time.time()
    subprocess.run(
        [binary, "devices", "--devices", "10000", "--push",
         f"http://127.0.0.1:{node.port}/ingest/readings", "--batch", "1000",
         "--rate", "100000000", "--readings", str(readings)],
        capture_output=True, check=True)
    wait_for("every pushed reading", lambda: node.received() >= readings)
    elapsed = time.time() - start
    done.set()
    for t in threads:
        t.join()
    cpu = node.stop()["cpu_s"]
    return readings / elapsed, latencies, cpu


def empty(binary, seconds):
    """A node with no query: what it costs to have one running."""
    node = Node(binary, None, 2)
    time.sleep(seconds)
    result = node.stop()
    print(json.dumps({
        "figure": f"serve with no query, 2 workers, {seconds}s",
        "node_cpu_percent_of_a_core": round(100 * result["cpu_s"] / result["wall_s"], 3),
        "node_peak_rss_mb": round(result["peak_rss_mb"], 1),
    }))


def api_cost(binary, calls=2000):
    """The node's own CPU per API call (from /proc), on one kept-alive connection."""
    tmp = tempfile.mkdtemp(prefix="edgeflow-bench-")
    query = write(tmp, "pushed", PUSH.format(connector="http_push", options=""))
    node = Node(binary, query, 2, UNLIMITED)

    def cpu():
        with open(f"/proc/{node.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    figures = {}
    for path in ("/metrics", "/api/v1/queries/pushed", "/api/v1/queries", "/healthz"):
        conn = http.client.HTTPConnection("127.0.0.1", node.port, timeout=30)
        before = cpu()
        for _ in range(calls):
            conn.request("GET", path)
            conn.getresponse().read()
        figures[path] = round((cpu() - before) / calls * 1e3, 3)
        conn.close()
    node.stop()
    print(json.dumps({"figure": f"node CPU ms per API call ({calls} calls each)", **figures}))


def control(binary, readings, pairs):
    """Cost of the control plane on ingest (A B A B), and start/stop latencies."""
    api_cost(binary)
    plain, scraped, latencies, cpu_plain, cpu_scraped = [], [], [], [], []
    for _ in range(pairs):
        rate, _, cpu = scraped_push(binary, readings, False)
        plain.append(rate)
        cpu_plain.append(cpu)
        rate, lat, cpu = scraped_push(binary, readings, True)
        scraped.append(rate)
        cpu_scraped.append(cpu)
        latencies += lat
    ratio = sum(scraped) / sum(plain)
    print(json.dumps({
        "figure": f"push {readings} readings, 2 workers, with /metrics and the status route "
                  f"each scraped 10x/s vs none, {pairs} A/B pairs",
        "readings_per_s_none": [round(r) for r in plain],
        "readings_per_s_scraped": [round(r) for r in scraped],
        "scraped_over_none": round(ratio, 4),
        "node_cpu_s_none": [round(c, 2) for c in cpu_plain],
        "node_cpu_s_scraped": [round(c, 2) for c in cpu_scraped],
        "node_cpu_scraped_over_none": round(sum(cpu_scraped) / sum(cpu_plain), 4),
        "api_calls": len(latencies),
        "api_p50_ms": round(1e3 * quantile(latencies, 0.5), 2),
        "api_p99_ms": round(1e3 * quantile(latencies, 0.99), 2),
    }))

    # Start a query on a running node fed a steady stream, and time its first window.
    tmp = tempfile.mkdtemp(prefix="edgeflow-bench-")
    query = write(tmp, "pushed", PUSH.format(connector="http_push", options=""))
    node = Node(binary, query, 2)
    feeder = subprocess.Popen(
        [binary, "devices", "--devices", "1000", "--push",
         f"http://127.0.0.1:{node.port}/ingest/readings", "--batch", "200",
         "--rate", "20000", "--for", "60s"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for("the stream", lambda: node.received() > 0)
    second = (PUSH.format(connector="http_push", options="")
              .replace("max_out_of_orderness = '5s'", "max_out_of_orderness = '0s'")
              .replace("INTERVAL '1' MINUTE", "INTERVAL '1' SECOND"))
    starts, firsts, stops = [], [], []
    for i in range(5):
        name = f"second_{i}"
        status, body, seconds = api(node.port, "POST", "/api/v1/queries",
                                    {"name": name, "sql": second})
        if status != 201:
            sys.exit(f"adding {name}: {status} {body}")
        started = time.perf_counter()
        starts.append(seconds)

        def files():
            return api(node.port, "GET", f"/api/v1/queries/{name}")[1]["figures"]["files"]
        wait_for("the first window", lambda: files() > 0)
        firsts.append(time.perf_counter() - started)
        status, body, seconds = api(node.port, "POST", f"/api/v1/queries/{name}/stop?windows=close")
        if status != 200:
            sys.exit(f"stopping {name}: {status} {body}")
        stops.append(seconds)
    feeder.terminate()
    feeder.wait()
    node.stop()
    print(json.dumps({
        "figure": "add + start a query on a node ingesting 20k readings/s (1 s windows, "
                  "0 s out-of-orderness), 5 times",
        "start_call_ms": [round(1e3 * s, 1) for s in starts],
        "first_window_file_after_start_ms": [round(1e3 * s, 1) for s in firsts],
        "stop_close_call_ms": [round(1e3 * s, 1) for s in stops],
    }))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bin", default="target/release/edgeflow")
    parser.add_argument("--base-bin", help="a build to compare with (the wal figure)")
    parser.add_argument("--scale", type=float, default=1.0,
                        help="fraction of the readings and seconds, for a quick look")
    parser.add_argument("figures", nargs="*",
                        default=["poll", "idle", "empty", "push", "mqtt", "control"])
    args = parser.parse_args()
    n = lambda x: max(1, int(x * args.scale))
    for figure in args.figures:
        if figure == "poll":
            poll(args.bin, 10_000, n(65), 2)
        elif figure == "idle":
            poll(args.bin, 1_000, n(60), 1)
        elif figure == "push":
            for workers in (1, 2):
                push(args.bin, n(2_000_000), workers)
        elif figure == "mqtt":
            for qos in (0, 1):
                mqtt(args.bin, n(100_000), qos)
        elif figure == "empty":
            empty(args.bin, n(60))
        elif figure == "control":
            control(args.bin, n(2_000_000), 4)
        elif figure == "wal":
            wal_cost(args.bin, args.base_bin, n(1_000_000), 2)
        elif figure == "recovery":
            recovery(args.bin, [n(500_000), n(1_000_000), n(2_000_000)])
        elif figure == "cluster":
            cluster_push(args.bin, n(2_000_000))
        else:
            sys.exit(f"unknown figure {figure}: poll, idle, empty, push, mqtt, control, wal, recovery, cluster")


if __name__ == "__main__":
    main()
