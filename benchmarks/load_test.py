"""Load test of ``sammed serve``: N concurrent client sessions clicking on loopback for a bounded time.

Starts the real server (``python -m sammed serve``) in a subprocess, then runs two phases in
this process: a 1-client baseline and N clients. Each client opens a session on the bundled CT,
makes clicks (positive and negative, near the liver, so most reuse the window's embedding),
fetches each click's changed region of the label map as a viewer does, sometimes undoes, and
every few clicks closes its session and opens a new one, so sessions come and go. Prints
throughput, p50/p95 latency of a click (click + changed-region fetch), the error count, and the
server's resident memory (sampled from /proc) over the run, with ratios against the baseline.
First clicks (a session's first, which encode its window) and refinement clicks (the others,
decoder only while they stay in the window) are also reported apart: clicks/s, p50 and p95.

A memory phase first opens ``--memory-sessions`` (16) sessions of the largest image the server
accepts (``--max-image-mb``, as uint8: the most voxels, so the largest charge), clicks in each and
fetches every reply that builds a full-size array (labels, mask, image) from all of them at
once; it prints the server's RSS growth next to the memory budget the server reports in
``/api/info`` and fails when the growth exceeds it.

    .venv/bin/python benchmarks/load_test.py --clients 16 --seconds 60 [--checkpoint tiny.pth]
    .venv/bin/python benchmarks/load_test.py --model sam-med3d-turbo --clients 16 --seconds 30 --memory-sessions 0
    .venv/bin/python benchmarks/load_test.py --memory-only --max-image-mb 64
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx2 as httpx
import nibabel as nib
import numpy as np

from sammed.data import SAMPLE_CT, SAMPLE_CT_LIVER_VOXEL


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Stats:
    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.kinds: list[str] = []  # "first" or "refinement", one per latency
        self.errors = 0
        self.error_samples: list[str] = []
        self.sessions_opened = 0
        self.sessions_closed = 0

    def error(self, what: str) -> None:
        self.errors += 1
        if len(self.error_samples) < 5:
            self.error_samples.append(what)


async def check(response: httpx.Response, stats: Stats) -> httpx.Response | None:
    if response.status_code >= 400:
        stats.error(f"{response.request.method} {response.request.url.path}: {response.status_code} {response.text[:120]}")
        return None
    return response


async def client_loop(client: httpx.AsyncClient, deadline: float, stats: Stats, seed: int, clicks_per_session: int) -> None:
    rng = random.Random(seed)
    while time.monotonic() < deadline:
        try:
            opened = await check(await client.post("/api/sessions", data={"path": "ct.nii.gz"}), stats)
            if opened is None:
                await asyncio.sleep(0.5)
                continue
            stats.sessions_opened += 1
            body = opened.json()
            key = {"X-Session-Key": body["session_key"]}
            url = f"/api/sessions/{body['session_id']}"
            for number in range(clicks_per_session):
                if time.monotonic() >= deadline:
                    break
                voxel = [c + rng.randint(-6, 6) for c in SAMPLE_CT_LIVER_VOXEL]
                voxel[2] = min(max(voxel[2], 0), 29)
                start = time.perf_counter()
                reply = await check(
                    await client.post(f"{url}/points", json={"position": voxel, "positive": number == 0 or rng.random() < 0.7}, headers=key),
                    stats,
                )
                if reply is None:
                    continue
                changed = reply.json()["changed"]
                if changed:
                    params = {"offset": ",".join(map(str, changed["offset"])), "shape": ",".join(map(str, changed["shape"]))}
                    if await check(await client.get(f"{url}/labels", params=params, headers=key), stats) is None:
                        continue
                stats.latencies.append(time.perf_counter() - start)
                stats.kinds.append("first" if number == 0 else "refinement")
                if rng.random() < 0.15:
                    await check(await client.post(f"{url}/undo", headers=key), stats)
            if await check(await client.delete(url, headers=key), stats) is not None:
                stats.sessions_closed += 1
        except httpx.HTTPError as exc:
            stats.error(f"{type(exc).__name__}: {exc}")


async def run_phase(url: str, clients: int, seconds: float, clicks_per_session: int, pid: int, seed: int) -> dict:
    stats = Stats()
    memory: list[float] = []
    limits = httpx.Limits(max_connections=clients + 4)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        deadline = time.monotonic() + seconds

        async def sample_memory():
            while time.monotonic() < deadline:
                memory.append(rss_mb(pid))
                await asyncio.sleep(0.5)

        start = time.perf_counter()
        await asyncio.gather(
            sample_memory(), *(client_loop(client, deadline, stats, seed + i, clicks_per_session) for i in range(clients))
        )
        elapsed = time.perf_counter() - start
        open_after = (await client.get("/api/info")).json()["sessions"]
    return {
        "clients": clients,
        "seconds": elapsed,
        **latency_summary(stats.latencies, elapsed),
        **{
            f"{kind}_{key}": value
            for kind in KINDS
            for key, value in latency_summary([t for t, k in zip(stats.latencies, stats.kinds) if k == kind], elapsed).items()
        },
        "errors": stats.errors,
        "error_samples": stats.error_samples,
        "opened": stats.sessions_opened,
        "closed": stats.sessions_closed,
        "open_after": open_after,
        "rss_first": memory[0] if memory else float("nan"),
        "rss_peak": max(memory) if memory else float("nan"),
        "rss_last": memory[-1] if memory else float("nan"),
    }


KINDS = ("first", "refinement")


def latency_summary(latencies: list[float], elapsed: float) -> dict:
    values = np.array(latencies) if latencies else np.array([np.nan])
    return {
        "clicks": len(latencies),
        "throughput": len(latencies) / elapsed,
        "p50": float(np.percentile(values, 50)),
        "p95": float(np.percentile(values, 95)),
    }


def largest_volume(path: Path, max_image_mb: float) -> tuple[int, ...]:
    """A uint8 cube as large as the server accepts, with a bright ball to click on."""
    side = int((max_image_mb * 2**20) ** (1 / 3))
    while (side + 1) ** 3 <= max_image_mb * 2**20:
        side += 1
    while side**3 > max_image_mb * 2**20:
        side -= 1
    grid = np.indices((side, side, side), dtype=np.float32) - side / 2
    array = (np.sqrt((grid**2).sum(axis=0)) < side / 4).astype(np.uint8) * 200
    array += np.random.default_rng(0).integers(0, 20, array.shape, dtype=np.uint8)
    nib.save(nib.Nifti1Image(array, np.diag([1.0, 1.0, 1.0, 1.0])), path)
    return array.shape


async def memory_phase(url: str, sessions: int, shape: tuple[int, ...], pid: int) -> bool:
    """RSS growth with ``sessions`` sessions of the largest image, against the reported budget."""
    async with httpx.AsyncClient(base_url=url, timeout=600) as client:
        info = (await client.get("/api/info")).json()
        before = rss_mb(pid)
        peak = before
        opened = []
        for _ in range(sessions):
            reply = await client.post("/api/sessions", data={"path": "largest.nii.gz"})
            if reply.status_code != 201:
                print(f"memory: session {len(opened) + 1} refused: {reply.status_code} {reply.text[:160]}")
                break
            body = reply.json()
            opened.append(({"X-Session-Key": body["session_key"]}, f"/api/sessions/{body['session_id']}"))
            peak = max(peak, rss_mb(pid))
        centre = [n // 2 for n in shape]
        for key, session_url in opened:
            await client.post(f"{session_url}/points", json={"position": centre}, headers=key)
            peak = max(peak, rss_mb(pid))
        for reply_path in ("/labels", "/mask", "/image"):  # every session at once: the transient peak

            async def fetch(key: dict, session_url: str) -> None:
                await client.get(session_url + reply_path, headers=key)

            sampling = asyncio.ensure_future(asyncio.gather(*(fetch(k, u) for k, u in opened)))
            while not sampling.done():
                peak = max(peak, rss_mb(pid))
                await asyncio.sleep(0.05)
            await sampling
        charged = (await client.get("/api/info")).json()["memory_charged_bytes"] / 2**20
        for key, session_url in opened:
            await client.delete(session_url, headers=key)
    budget = info["memory_budget_bytes"] / 2**20
    growth = peak - before
    print(
        f"memory: {len(opened)} sessions of the largest image ({' x '.join(map(str, shape))} uint8, "
        f"{info['max_image_bytes'] / 2**20:.0f} MiB decoded); server RSS before {before:.0f} MiB, peak {peak:.0f} MiB, "
        f"growth {growth:.0f} MiB; charged {charged:.0f} MiB; reported budget {budget:.0f} MiB "
        f"({info['largest_session_bytes'] / 2**20:.0f} MiB per session of the largest) -> "
        + ("within budget" if growth <= budget else "OVER BUDGET")
    )
    return len(opened) == sessions and growth <= budget


def report(result: dict, baseline: dict | None) -> None:
    print(
        f"{result['clients']:>3} clients: {result['clicks']} clicks in {result['seconds']:.1f} s = "
        f"{result['throughput']:.2f} clicks/s; latency p50 {result['p50'] * 1000:.0f} ms, p95 {result['p95'] * 1000:.0f} ms; "
        f"errors {result['errors']}"
    )
    print(
        f"     sessions opened {result['opened']}, closed {result['closed']}, still open {result['open_after']}; "
        f"server RSS first {result['rss_first']:.0f} MB, peak {result['rss_peak']:.0f} MB, last {result['rss_last']:.0f} MB"
    )
    for kind in KINDS:
        print(
            f"     {kind + ' clicks':17s} {result[kind + '_clicks']:5d} = {result[kind + '_throughput']:6.2f} clicks/s; "
            f"p50 {result[kind + '_p50'] * 1000:6.0f} ms, p95 {result[kind + '_p95'] * 1000:6.0f} ms"
        )
    for sample in result["error_samples"]:
        print(f"     error: {sample}")
    if baseline:
        print(
            f"     vs 1 client: throughput x{result['throughput'] / baseline['throughput']:.2f}, "
            f"p50 x{result['p50'] / baseline['p50']:.2f}, p95 x{result['p95'] / baseline['p95']:.2f}"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=60, help="duration of the N-client phase")
    parser.add_argument("--baseline-seconds", type=float, default=15, help="duration of the 1-client phase")
    parser.add_argument("--clicks-per-session", type=int, default=8, help="clicks before a client closes and reopens")
    parser.add_argument("--model", default="sam-med3d-tiny")
    parser.add_argument("--checkpoint", help="weights; without it the server runs with --allow-random-weights")
    parser.add_argument("--max-image-mb", type=float, default=16, help="the server's per-image limit (decoded)")
    parser.add_argument("--memory-sessions", type=int, default=16, help="sessions of the largest image in the memory phase")
    parser.add_argument("--memory-only", action="store_true", help="run only the memory phase")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="sammed-load-") as tmp:
        root = Path(tmp)
        shutil.copy(SAMPLE_CT, root / "ct.nii.gz")
        shape = largest_volume(root / "largest.nii.gz", args.max_image_mb)
        largest_charge_mb = 7 * args.max_image_mb  # config.session_charge at 1 byte per voxel: 3 copies + 4 bytes/voxel
        budget_mb = args.memory_sessions * largest_charge_mb + 256  # + the click phase's sessions of the small CT
        port = free_port()
        command = [sys.executable, "-m", "sammed", "serve", "--model", args.model, "--host", "127.0.0.1", "--port", str(port)]
        command += ["--data-root", str(root), "--max-sessions", str(max(32, 2 * args.clients, args.memory_sessions))]
        command += ["--max-image-mb", str(args.max_image_mb), "--memory-budget-mb", str(budget_mb)]
        command += ["--checkpoint", args.checkpoint] if args.checkpoint else ["--allow-random-weights"]
        server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 120
            while True:
                try:
                    if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if server.poll() is not None or time.monotonic() > deadline:
                    print(server.stderr.read().decode(), file=sys.stderr)
                    return 1
                time.sleep(0.2)
            print(f"server: model {args.model} on {url}, {os.cpu_count()} CPUs; each click = POST points + GET changed labels")
            within = asyncio.run(memory_phase(url, args.memory_sessions, shape, server.pid))
            if args.memory_only:
                return 0 if within else 1
            baseline = asyncio.run(run_phase(url, 1, args.baseline_seconds, args.clicks_per_session, server.pid, 0))
            report(baseline, None)
            loaded = asyncio.run(run_phase(url, args.clients, args.seconds, args.clicks_per_session, server.pid, 1000))
            report(loaded, baseline)
            return 1 if loaded["errors"] or baseline["errors"] or not within else 0
        finally:
            server.terminate()
            server.wait(timeout=30)


if __name__ == "__main__":
    sys.exit(main())
