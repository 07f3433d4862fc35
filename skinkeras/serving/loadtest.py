"""Load test of a running server on loopback: sequential and concurrent clients, bounded in count and time.

    python -m skinkeras.serving.loadtest --url http://127.0.0.1:8000 --image lesion.jpg --clients 1,4 \\
        --requests 24 --seconds 300 [--pid SERVER_PID] [--token T] [--age 55 --sex male --site back]

Each round sends `requests` POST /api/predict (or stops at `seconds`) from N client threads and reports
requests per second, latency p50 / p95 / max, the status codes, and the server's peak resident memory
(Linux VmHWM of --pid).
"""

import argparse
import json
import threading
import time
import urllib.error
import urllib.request
import uuid

import numpy as np


def multipart(fields, files):
    """(body, content type) of a multipart/form-data request.

    Args:
        fields: name -> text value.
        files: name -> (filename, bytes).
    """
    boundary = uuid.uuid4().hex
    body = b""
    for name, value in fields.items():
        body += f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
    for name, (filename, payload) in files.items():
        body += (f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
                 "Content-Type: application/octet-stream\r\n\r\n").encode() + payload + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def peak_memory_mb(pid):
    """Peak resident memory of process `pid` in MB (Linux VmHWM), or None."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def run_round(url, body, content_type, clients, requests, seconds, token=None):
    """One round: `clients` threads share `requests` predictions, stopping early at `seconds`.

    Args:
        url: the server's base URL.
        body: the multipart body.
        content_type: its Content-Type.
        clients: concurrent client threads.
        requests: total requests of the round.
        seconds: time bound of the round.
        token: bearer token, or None.

    Returns:
        dict: clients, requests done, seconds, requests_per_s, p50_s, p95_s, max_s, statuses.
    """
    headers = {"Content-Type": content_type, **({"Authorization": f"Bearer {token}"} if token else {})}
    latencies, statuses, lock = [], {}, threading.Lock()
    left = [requests]
    deadline = time.perf_counter() + seconds

    def client():
        while True:
            with lock:
                if left[0] <= 0 or time.perf_counter() > deadline:
                    return
                left[0] -= 1
            begin = time.perf_counter()
            try:
                with urllib.request.urlopen(urllib.request.Request(url + "/api/predict", body, headers),
                                            timeout=max(seconds, 30)) as answer:
                    answer.read()
                    status = answer.status
            except urllib.error.HTTPError as exc:
                status = exc.code
            except OSError as exc:
                status = f"{exc.__class__.__name__}"
            with lock:
                latencies.append(time.perf_counter() - begin)
                statuses[str(status)] = statuses.get(str(status), 0) + 1

    begin = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - begin
    lat = np.asarray(latencies) if latencies else np.zeros(1)
    return {"clients": clients, "requests": len(latencies), "seconds": round(elapsed, 2),
            "requests_per_s": round(len(latencies) / elapsed, 3) if elapsed else None,
            "p50_s": round(float(np.percentile(lat, 50)), 3), "p95_s": round(float(np.percentile(lat, 95)), 3),
            "max_s": round(float(lat.max()), 3), "statuses": statuses}


def load_test(url, image, clients=(1, 4), requests=24, seconds=300, fields=None, token=None, pid=None, warmup=1):
    """Rounds of `run_round` for each client count, after `warmup` requests that are not counted.

    Args:
        url: the server's base URL.
        image: path of the image to send.
        clients: client counts, one round each.
        requests: requests per round.
        seconds: time bound per round.
        fields: optional age / sex / site form fields.
        token: bearer token, or None.
        pid: the server's process id, for its peak memory (None: not reported).
        warmup: requests sent first and not counted (the first call of a model compiles or allocates).
    """
    with open(image, "rb") as f:
        body, content_type = multipart(fields or {}, {"image": (image.rsplit("/", 1)[-1], f.read())})
    if warmup:
        run_round(url, body, content_type, 1, warmup, seconds, token)
    rounds = [run_round(url, body, content_type, n, requests, seconds, token) for n in clients]
    for r in rounds:
        r["server_peak_mb"] = peak_memory_mb(pid) if pid else None
    return rounds


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m skinkeras.serving.loadtest", description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--image", required=True)
    parser.add_argument("--clients", default="1,4", help="comma-separated client counts, one round each")
    parser.add_argument("--requests", type=int, default=24, help="requests per round")
    parser.add_argument("--seconds", type=float, default=300, help="time bound per round")
    parser.add_argument("--pid", type=int, default=None, help="the server's process id (peak memory)")
    parser.add_argument("--token", default=None)
    parser.add_argument("--age", default=None)
    parser.add_argument("--sex", default=None)
    parser.add_argument("--site", default=None)
    args = parser.parse_args(argv)
    fields = {k: v for k, v in (("age", args.age), ("sex", args.sex), ("site", args.site)) if v is not None}
    rounds = load_test(args.url, args.image, [int(c) for c in args.clients.split(",")], args.requests, args.seconds,
                       fields, args.token, args.pid)
    print("| clients | requests | seconds | requests/s | p50 s | p95 s | max s | statuses | server peak MB |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rounds:
        print(f"| {r['clients']} | {r['requests']} | {r['seconds']} | {r['requests_per_s']} | {r['p50_s']} | "
              f"{r['p95_s']} | {r['max_s']} | {json.dumps(r['statuses'])} | {r['server_peak_mb']} |")


if __name__ == "__main__":
    main()
