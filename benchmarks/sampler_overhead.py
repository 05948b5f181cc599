"""What the telemetry sampler costs: its CPU time, and a CPU benchmark's throughput with and without it.

Part 1, cost. The sampler runs alone for ``--seconds`` at 100 ms and at 10 ms
on a simulated H100 with three MIG slices, i.e. every reading is the board
metrics, the memory of three MIG devices and (each second) GPM of three GPU
instances. Reported: the sampler thread's CPU time as a share of one core
(``time.thread_time``), and the mean and longest reading. The simulator
pays a file lock and a JSON load per NVML call (~0.1 ms), far more than a
real driver; ``--real`` measures the real NVML instead.

Part 2, impact. One CPU benchmark run (``gemm`` in a worker process on a
simulated GPU slot, as ``migperf bench`` runs it) lasting ``--seconds``,
while this process switches the sampler off / on at 100 ms / off / on at
10 ms in ``--block``-second blocks. The worker's per-iteration timings give
its throughput in every block; each on-block is divided by the mean of the
off-blocks on either side, so the baseline is the same process, measured
within a second of the sampled block, and load from other tenants that
drifts over seconds cancels out. Reported: the median ratio over blocks and
its interquartile range. The worker uses ``--threads`` torch threads: 1 by
default (as ``harness_overhead.py``); ``--threads 0`` uses every core, the
worst case for a sampler that needs a core too. Each on-block starts and
stops a sampler, so its start-up is charged too.

Run: ``.venv/bin/python benchmarks/sampler_overhead.py [--seconds 48] [--block 1] [--threads 1] [--json]``.
Exits 1 when the median throughput change at 100 ms is 1 % or more.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from typing import Any

LIMIT = 0.01
INTERVALS_MS = (100.0, 10.0)


def sampler_cost(
    nvml: Any, interval_s: float, seconds: float, mig_uuids: list[str] | None = None
) -> dict[str, Any]:
    """Run the sampler alone; its CPU share of one core and read times."""
    from migperf.telemetry.sampler import NvmlSampler

    sampler = NvmlSampler(nvml, interval_s=interval_s, mig_uuids=mig_uuids)
    with sampler:
        time.sleep(seconds)
    st = sampler.stats
    wall = st.wall_s or seconds
    return {
        "interval_ms": interval_s * 1000,
        "mig_devices_read": "all" if mig_uuids is None else len(mig_uuids),
        "samples": st.samples,
        "missed_ticks": st.missed_ticks,
        "cpu_pct_of_one_core": round(100 * (st.cpu_s or 0.0) / wall, 3),
        "read_ms_mean": round(st.read_ms_mean or 0.0, 3),
        "read_ms_max": round(st.read_ms_max or 0.0, 3),
    }


def throughput_impact(
    nvml: Any, seconds: float, block_s: float, n: int, threads: int
) -> dict[str, Any]:
    """One long worker run; the sampler switched off / 100 ms / off / 10 ms in blocks.

    Each on-block's throughput is divided by the mean of the off-blocks on
    either side of it, so load from other tenants of the host that drifts
    over seconds cancels out; the median over blocks is reported.
    """
    from migperf.bench.device import resolve_device
    from migperf.bench.runner import WorkerProcess
    from migperf.bench.spec import parse_spec
    from migperf.telemetry.sampler import NvmlSampler

    mig = nvml.mig_devices(0)[0].mig_uuid
    env = resolve_device(mig, simulated=True).env()
    if threads > 0:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    spec = parse_spec(
        {
            "workload": "gemm",
            "task": "infer",
            "model_args": {"n": n},
            "warmup_iterations": 50,
            "min_iterations": 10,
            "min_duration_s": seconds,
            "max_duration_s": seconds,
            "expect_device": "cpu",
            "simulated": True,
            "barrier": True,
        }
    )
    worker = WorkerProcess(spec, env, timeout_s=seconds * 3 + 300)
    worker.start()
    if not worker.wait_ready():
        worker.abort()
        raise SystemExit(f"the benchmark worker did not start: {worker.wait().error}")
    cycle: list[float | None] = [None, 0.1, None, 0.01]
    blocks: list[tuple[float | None, float, float]] = []
    worker.release()
    end = time.time() + seconds
    k = 0
    while time.time() < end:
        state = cycle[k % len(cycle)]
        k += 1
        t0 = time.time()
        if state is None:
            time.sleep(block_s)
        else:
            # As `migperf bench --device MIG-...` samples: the GPU and its own slice.
            sampler = NvmlSampler(nvml, [0], interval_s=state, mig_uuids=[mig])
            with sampler:
                time.sleep(block_s)
        blocks.append((state, t0, time.time()))
    r = worker.wait()
    if r.status != "ok" or r.timing is None:
        raise SystemExit(f"benchmark run failed: {r.status} {r.error}")
    # Iteration end times: the window spread over the measured iterations in proportion.
    lat = r.latency_samples_ms
    total = sum(lat)
    w0, w1 = r.timing.window_start_unix_s, r.timing.window_end_unix_s
    ends, acc = [], 0.0
    for x in lat:
        acc += x
        ends.append(w0 + (w1 - w0) * acc / total)
    rates: list[float | None] = []
    for _, t0, t1 in blocks:
        lo, hi = max(t0, w0), min(t1, w1)
        if hi - lo < 0.8 * (t1 - t0):
            rates.append(None)  # a block the measurement window does not cover
            continue
        done = sum(1 for e in ends if lo <= e < hi)
        rates.append(done / (hi - lo))
    out: dict[str, Any] = {
        "blocks": len(blocks),
        "block_s": block_s,
        "window_s": round(w1 - w0, 2),
        "samples_per_s": round(r.throughput.samples_per_s, 1) if r.throughput else None,
    }
    for ms in INTERVALS_MS:
        ratios: list[float] = []
        for b, (state, _, _) in enumerate(blocks):
            rate = rates[b]
            if state is None or abs(state * 1000 - ms) > 1e-6 or rate is None:
                continue
            around = [
                x
                for c in (b - 1, b + 1)
                if 0 <= c < len(blocks) and blocks[c][0] is None and (x := rates[c]) is not None
            ]
            if around:
                ratios.append(rate / statistics.fmean(around))
        if not ratios:
            continue
        qs = statistics.quantiles(ratios, n=4) if len(ratios) >= 2 else [ratios[0]] * 3
        out[f"{ms:g}ms"] = {
            "pairs": len(ratios),
            "throughput_ratio_median": round(statistics.median(ratios), 4),
            "throughput_ratio_q1": round(qs[0], 4),
            "throughput_ratio_q3": round(qs[2], 4),
            "change_pct_median": round(100 * (statistics.median(ratios) - 1), 2),
        }
    return out


def main(argv: list[str] | None = None) -> int:
    """Measure, print, and exit 1 when the 100 ms sampler changes throughput by >= 1 %."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--seconds", type=float, default=48.0, help="length of the benchmark run")
    ap.add_argument("--block", type=float, default=1.0, help="seconds per on/off block")
    ap.add_argument("--threads", type=int, default=1, help="worker torch threads (0: all cores)")
    ap.add_argument("--cost-seconds", type=float, default=5.0, help="sampler-alone duration")
    ap.add_argument("--n", type=int, default=256, help="gemm size of the CPU benchmark")
    ap.add_argument("--real", action="store_true", help="measure the cost on the real driver")
    ap.add_argument("--skip-impact", action="store_true", help="only measure the sampler's cost")
    ap.add_argument("--json", action="store_true", help="print one JSON summary line at the end")
    args = ap.parse_args(argv)

    os.environ.setdefault("MIGPERF_STATE_DIR", tempfile.mkdtemp(prefix="migperf-overhead-"))
    from migperf.mig import apply_layout
    from migperf.nvml import open_nvml

    summary: dict[str, Any] = {"cpu_count": os.cpu_count()}
    if args.real:
        # Read-only: the real driver's cost only; no simulator, nothing changed.
        from migperf.errors import MigperfError

        try:
            real = open_nvml(None, read_only=True)
        except MigperfError as exc:
            print(json.dumps({"error": exc.message}))
            return 1
        with real:
            summary["cost_backend"] = f"real NVML ({real.gpu_count()} GPU(s))"
            summary["cost"] = [
                sampler_cost(real, ms / 1000, args.cost_seconds) for ms in INTERVALS_MS
            ]
    sim = None
    if not args.real or not args.skip_impact:
        sim = open_nvml("h100-80gb", read_only=False)
        if not sim.mig_devices(0):
            apply_layout(sim, 0, "3g.40gb,2g.20gb,2g.20gb")
    if not args.real:
        assert sim is not None
        summary["cost_backend"] = "simulated NVML (h100-80gb, 3 MIG slices)"
        own = [sim.mig_devices(0)[0].mig_uuid]
        summary["cost"] = [
            sampler_cost(sim, ms / 1000, args.cost_seconds, mig)
            for mig in (own, None)
            for ms in INTERVALS_MS
        ]
    for c in summary["cost"]:
        print(
            f"sampler alone @ {c['interval_ms']:g} ms, MIG devices read: "
            f"{c['mig_devices_read']} ({summary['cost_backend']}): "
            f"{c['cpu_pct_of_one_core']:.2f} % of one core, reading {c['read_ms_mean']:.2f} ms "
            f"mean / {c['read_ms_max']:.2f} ms max, {c['samples']} readings, "
            f"{c['missed_ticks']} missed ticks"
        )
    if not args.skip_impact:
        assert sim is not None
        impact = throughput_impact(sim, args.seconds, args.block, args.n, args.threads)
        impact["worker_threads"] = args.threads or os.cpu_count()
        summary["impact"] = impact
        print(
            f"CPU benchmark (gemm n={args.n}, one worker process, "
            f"{impact['worker_threads']} thread(s), {impact['samples_per_s']} samples/s over "
            f"{impact['window_s']} s), sampler off/100 ms/off/10 ms in {args.block:g} s blocks:"
        )
        for ms in INTERVALS_MS:
            i = impact.get(f"{ms:g}ms")
            if i is None:
                continue
            print(
                f"  sampler @ {ms:g} ms: throughput x{i['throughput_ratio_median']:.4f} median "
                f"of {i['pairs']} blocks vs neighbouring off-blocks "
                f"(IQR {i['throughput_ratio_q1']:.4f}..{i['throughput_ratio_q3']:.4f}), "
                f"{i['change_pct_median']:+.2f} %"
            )
    if sim is not None:
        sim.shutdown()
    ok = True
    if "impact" in summary:
        change = abs(summary["impact"]["100ms"]["throughput_ratio_median"] - 1)
        ok = change < LIMIT
        summary["verdict"] = (
            f"sampler @ 100 ms changes throughput by {100 * change:.2f} % "
            f"({'<' if ok else '>='} {100 * LIMIT:g} %)"
        )
        print(summary["verdict"])
    if args.json:
        print(json.dumps(summary))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
