"""What the telemetry sampler costs: its CPU time, and a CPU benchmark's throughput with and without it.

Part 1, cost. The sampler runs alone for ``--cost-seconds`` at 100 ms and at
10 ms on a simulated H100 with three MIG slices, reading the board metrics and
either the run's own MIG device (as ``migperf bench --device MIG-...`` does)
or all three, plus GPM of their GPU instances each second. Reported: the
sampler thread's CPU time per reading (``time.thread_time``) and as a share of
one core, the mean and longest reading, missed ticks, and the CPU that
``start()`` + ``stop()`` cost the caller (paid once per run). The simulator
pays a file lock and a JSON state check per reading, more than a real driver;
``--real`` measures the real NVML instead.

Part 2, impact, a same-command A/B. For each ``--threads`` setting (default
``1,0``: one torch thread, then every core), one CPU benchmark run (``gemm``
in a worker process on a simulated GPU slot, as ``migperf bench`` runs it)
lasts ``--seconds`` while this process interleaves ``--block``-second blocks:
sampler off, on at 100 ms, off, on at 10 ms, and again (rounds). An on-block
starts the sampler just before the block and stops it just after, so the
block measures steady-state sampling (start-up is reported in part 1). The
worker's per-iteration timings give its throughput in every block; each
on-block is divided by the mean of the off-blocks on either side, so the
baseline is the same process measured within a second, and load from other
tenants that drifts over seconds cancels out. Other tenants that come and go
within seconds do not cancel (a two-thread benchmark on two cores loses most
of a block when a third busy process appears), so on Linux each block also
records the CPU time that neither the worker nor this process used
(``/proc/stat`` minus both), and a round whose blocks saw more than
``--max-foreign`` cores of it is dropped and counted. Reported per interval:
the median ratio over the kept rounds, a distribution-free 95 % confidence
interval of the median, the interquartile range and the extremes, and the
sampler's CPU per reading while the benchmark ran.

Priority. The sampler thread renices itself (19) on Linux, but with the
kernel's autogroup on (``/proc/sys/kernel/sched_autogroup_enabled``, tasks in
the root cpu cgroup) nice only counts within a session, and the runner starts
each worker in a new session, so there it changes nothing.
``--worker-session shared`` starts the worker in this process's session (its
own process group, which the runner's ``killpg`` needs) to measure what
sharing the session would buy; ``--nice off`` turns the renice off.

Run: ``.venv/bin/python benchmarks/sampler_overhead.py [--seconds 64] [--block 0.5]
[--threads 1,0] [--max-foreign 0.1] [--nice 19|off] [--worker-session own|shared] [--json]``. Exits 1 when the median throughput
change at 100 ms is 1 % or more for any ``--threads`` setting.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

LIMIT = 0.01
INTERVALS_MS = (100.0, 10.0)


def _share_session() -> None:
    """Start workers in this session, in a process group of their own (an experiment)."""
    real = subprocess.Popen

    class Popen(real):  # type: ignore[valid-type,misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            if kwargs.pop("start_new_session", False):
                kwargs["process_group"] = 0
            super().__init__(*args, **kwargs)

    subprocess.Popen = Popen  # type: ignore[misc]


def _sampler_kwargs(nice: str | None) -> dict[str, Any]:
    # Only passed when asked for, so the script also measures samplers without the option.
    if nice is None:
        return {}
    return {"nice": None if nice == "off" else int(nice)}


def sampler_cost(
    nvml: Any,
    interval_s: float,
    seconds: float,
    mig_uuids: list[str] | None = None,
    nice: str | None = None,
) -> dict[str, Any]:
    """Run the sampler alone; its CPU per reading, share of one core and read times."""
    from migperf.telemetry.sampler import NvmlSampler

    sampler = NvmlSampler(nvml, interval_s=interval_s, mig_uuids=mig_uuids, **_sampler_kwargs(nice))
    c0 = time.thread_time()
    sampler.start()
    c1 = time.thread_time()
    time.sleep(seconds)
    c2 = time.thread_time()
    sampler.stop()
    c3 = time.thread_time()
    st = sampler.stats
    wall = st.wall_s or seconds
    # The thread's CPU covers the ticks it took (the first and last reading are the caller's).
    ticks = max(st.samples - 2, 1)
    return {
        "interval_ms": interval_s * 1000,
        "mig_devices_read": "all" if mig_uuids is None else len(mig_uuids),
        "samples": st.samples,
        "missed_ticks": st.missed_ticks,
        "cpu_us_per_reading": round(1e6 * (st.cpu_s or 0.0) / ticks, 1),
        "cpu_pct_of_one_core": round(100 * (st.cpu_s or 0.0) / wall, 3),
        "read_ms_mean": round(st.read_ms_mean or 0.0, 3),
        "read_ms_max": round(st.read_ms_max or 0.0, 3),
        "start_stop_cpu_ms": round(1000 * ((c1 - c0) + (c3 - c2)), 2),
    }


def median_ci(values: list[float], level: float = 0.95) -> tuple[float, float] | None:
    """Distribution-free confidence interval of the median (binomial order statistics).

    None when there are too few values for the level (fewer than 6 for 95 %).
    """
    x = sorted(values)
    n = len(x)
    # Largest j with P(Binomial(n, 1/2) < j) <= (1 - level) / 2: the interval is x[j-1] .. x[n-j].
    tail = (1 - level) / 2
    cdf, j = 0.0, 0
    while True:
        nxt = cdf + math.comb(n, j) / 2**n
        if nxt > tail:
            break
        cdf, j = nxt, j + 1
    if j == 0:
        return None
    return x[j - 1], x[n - j]


def _cpu_s(worker_pid: int | None) -> tuple[float, float, float] | None:
    """CPU seconds so far: (all CPUs busy, the worker, this process); None without ``/proc``."""
    try:
        hz = os.sysconf("SC_CLK_TCK")
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:9]]
        # user nice system idle iowait irq softirq steal. Interrupts are left out: they
        # are charged to no process, and the sampler's own timer wake-ups would count.
        busy = (v[0] + v[1] + v[2] + v[7]) / hz
        worker = 0.0
        if worker_pid is not None:
            with open(f"/proc/{worker_pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            worker = (int(fields[11]) + int(fields[12])) / hz  # utime, stime (all threads)
    except (OSError, ValueError, IndexError):
        return None
    return busy, worker, time.process_time()


def _foreign_cores(
    a: tuple[float, float, float] | None, b: tuple[float, float, float] | None, dt: float
) -> float | None:
    """Cores' worth of CPU used by neither the worker nor this process between two snapshots."""
    if a is None or b is None or dt <= 0:
        return None
    return max(0.0, (b[0] - a[0]) - (b[1] - a[1]) - (b[2] - a[2])) / dt


def throughput_impact(
    nvml: Any,
    seconds: float,
    block_s: float,
    n: int,
    threads: int,
    nice: str | None,
    max_foreign: float,
) -> dict[str, Any]:
    """One long worker run; the sampler switched off / 100 ms / off / 10 ms in blocks."""
    from migperf.bench.device import resolve_device
    from migperf.bench.process import WorkerProcess
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
    foreign: list[float | None] = []
    on_cpu: dict[float, list[tuple[float, int]]] = {0.1: [], 0.01: []}
    worker.release()
    end = time.time() + seconds
    k = 0
    while time.time() < end:
        state = cycle[k % len(cycle)]
        k += 1
        if state is None:
            c0, t0 = _cpu_s(worker.pid), time.time()
            time.sleep(block_s)
            t1, c1 = time.time(), _cpu_s(worker.pid)
            blocks.append((None, t0, t1))
            foreign.append(_foreign_cores(c0, c1, t1 - t0))
            continue
        # As `migperf bench --device MIG-...` samples: the GPU and its own slice.
        sampler = NvmlSampler(nvml, [0], interval_s=state, mig_uuids=[mig], **_sampler_kwargs(nice))
        sampler.start()
        c0, t0 = _cpu_s(worker.pid), time.time()
        time.sleep(block_s)
        t1, c1 = time.time(), _cpu_s(worker.pid)
        sampler.stop()
        blocks.append((state, t0, t1))
        foreign.append(_foreign_cores(c0, c1, t1 - t0))
        st = sampler.stats
        on_cpu[state].append((st.cpu_s or 0.0, max(st.samples - 2, 0)))
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
        "worker_threads": threads or os.cpu_count(),
        "blocks": len(blocks),
        "block_s": block_s,
        "window_s": round(w1 - w0, 2),
        "samples_per_s": round(r.throughput.samples_per_s, 1) if r.throughput else None,
        "iterations_per_block": round(len(lat) / max(w1 - w0, 1e-9) * block_s),
    }
    known = [f for f in foreign if f is not None]
    if known:
        out["foreign_cores_median"] = round(statistics.median(known), 3)
        out["foreign_cores_max"] = round(max(known), 3)

    def quiet(b: int) -> bool:
        f = foreign[b]
        return f is None or f <= max_foreign

    for ms in INTERVALS_MS:
        ratios: list[float] = []
        disturbed = 0
        for b, (state, _, _) in enumerate(blocks):
            rate = rates[b]
            if state is None or abs(state * 1000 - ms) > 1e-6 or rate is None:
                continue
            near = [
                c
                for c in (b - 1, b + 1)
                if 0 <= c < len(blocks) and blocks[c][0] is None and rates[c] is not None
            ]
            if not near:
                continue
            if not all(quiet(c) for c in (b, *near)):
                disturbed += 1
                continue
            ratios.append(rate / statistics.fmean(rates[c] for c in near))  # type: ignore[misc]
        if not ratios:
            out[f"{ms:g}ms"] = {"rounds": 0, "rounds_disturbed": disturbed}
            continue
        qs = statistics.quantiles(ratios, n=4) if len(ratios) >= 2 else [ratios[0]] * 3
        ci = median_ci(ratios)
        cpu = on_cpu[ms / 1000]
        cpu_s = sum(c for c, _ in cpu)
        ticks = sum(t for _, t in cpu)
        out[f"{ms:g}ms"] = {
            "rounds": len(ratios),
            "rounds_disturbed": disturbed,
            "throughput_ratio_median": round(statistics.median(ratios), 4),
            "ci95_median": None if ci is None else [round(ci[0], 4), round(ci[1], 4)],
            "throughput_ratio_q1": round(qs[0], 4),
            "throughput_ratio_q3": round(qs[2], 4),
            "throughput_ratio_min": round(min(ratios), 4),
            "throughput_ratio_max": round(max(ratios), 4),
            "change_pct_median": round(100 * (statistics.median(ratios) - 1), 2),
            "sampler_cpu_us_per_reading": round(1e6 * cpu_s / ticks, 1) if ticks else None,
            "sampler_cpu_pct_of_one_core": round(100 * cpu_s / (len(cpu) * block_s), 3),
        }
    return out


def main(argv: list[str] | None = None) -> int:
    """Measure, print, and exit 1 when the 100 ms sampler changes throughput by >= 1 %."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--seconds", type=float, default=64.0, help="length of each benchmark run")
    ap.add_argument("--block", type=float, default=0.5, help="seconds per on/off block")
    ap.add_argument(
        "--threads", default="1,0", help="worker torch threads per run, comma-separated (0: all)"
    )
    ap.add_argument("--cost-seconds", type=float, default=5.0, help="sampler-alone duration")
    ap.add_argument("--n", type=int, default=256, help="gemm size of the CPU benchmark")
    ap.add_argument(
        "--max-foreign",
        type=float,
        default=0.1,
        help="drop rounds in which other processes used more than this many cores",
    )
    ap.add_argument("--nice", default=None, help="sampler thread nice value, or 'off'")
    ap.add_argument(
        "--worker-session",
        choices=("own", "shared"),
        default="own",
        help="worker in a new session (as the runner does) or in this one",
    )
    ap.add_argument("--real", action="store_true", help="measure the cost on the real driver")
    ap.add_argument("--skip-impact", action="store_true", help="only measure the sampler's cost")
    ap.add_argument("--skip-cost", action="store_true", help="only measure the impact")
    ap.add_argument("--json", action="store_true", help="print one JSON summary line at the end")
    args = ap.parse_args(argv)
    threads = [int(t) for t in args.threads.split(",") if t.strip()]
    if args.worker_session == "shared":
        _share_session()

    os.environ.setdefault("MIGPERF_STATE_DIR", tempfile.mkdtemp(prefix="migperf-overhead-"))
    from migperf.mig import apply_layout
    from migperf.nvml import open_nvml

    summary: dict[str, Any] = {
        "cpu_count": os.cpu_count(),
        "nice": args.nice or "default",
        "worker_session": args.worker_session,
    }
    summary["cost"] = []
    if args.real and not args.skip_cost:
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
                sampler_cost(real, ms / 1000, args.cost_seconds, nice=args.nice)
                for ms in INTERVALS_MS
            ]
    sim = None
    if not (args.real or args.skip_cost) or not args.skip_impact:
        sim = open_nvml("h100-80gb", read_only=False)
        if not sim.mig_devices(0):
            apply_layout(sim, 0, "3g.40gb,2g.20gb,2g.20gb")
    if not (args.real or args.skip_cost):
        assert sim is not None
        summary["cost_backend"] = "simulated NVML (h100-80gb, 3 MIG slices)"
        own = [sim.mig_devices(0)[0].mig_uuid]
        summary["cost"] = [
            sampler_cost(sim, ms / 1000, args.cost_seconds, mig, args.nice)
            for mig in (own, None)
            for ms in INTERVALS_MS
        ]
    for c in summary["cost"]:
        print(
            f"sampler alone @ {c['interval_ms']:g} ms, MIG devices read: "
            f"{c['mig_devices_read']} ({summary['cost_backend']}): "
            f"{c['cpu_us_per_reading']:.0f} us CPU per reading = "
            f"{c['cpu_pct_of_one_core']:.2f} % of one core; reading {c['read_ms_mean']:.2f} ms "
            f"mean / {c['read_ms_max']:.2f} ms max, {c['samples']} readings, "
            f"{c['missed_ticks']} missed ticks; start+stop {c['start_stop_cpu_ms']:.1f} ms CPU"
        )
    ok = True
    verdicts = []
    if not args.skip_impact:
        assert sim is not None
        summary["impact"] = []
        for t in threads:
            impact = throughput_impact(
                sim, args.seconds, args.block, args.n, t, args.nice, args.max_foreign
            )
            summary["impact"].append(impact)
            print(
                f"CPU benchmark (gemm n={args.n}, one worker process, "
                f"{impact['worker_threads']} thread(s), {impact['samples_per_s']} samples/s, "
                f"~{impact['iterations_per_block']} iterations per block, {impact['window_s']} s),"
                f" sampler off/100 ms/off/10 ms in {args.block:g} s blocks; other processes used"
                f" {impact.get('foreign_cores_median', '?')} cores (median of blocks, max "
                f"{impact.get('foreign_cores_max', '?')}):"
            )
            for ms in INTERVALS_MS:
                i = impact.get(f"{ms:g}ms")
                if i is None:
                    continue
                if not i["rounds"]:
                    print(
                        f"  sampler @ {ms:g} ms: no quiet round ({i['rounds_disturbed']} disturbed"
                        f" by other processes > {args.max_foreign:g} cores)"
                    )
                    continue
                ci = i["ci95_median"]
                ci_text = f"95% CI {ci[0]:.4f}..{ci[1]:.4f}, " if ci else ""
                print(
                    f"  sampler @ {ms:g} ms: throughput x{i['throughput_ratio_median']:.4f} median "
                    f"of {i['rounds']} quiet rounds, {i['rounds_disturbed']} disturbed dropped "
                    f"({i['change_pct_median']:+.2f} %; {ci_text}"
                    f"IQR {i['throughput_ratio_q1']:.4f}..{i['throughput_ratio_q3']:.4f}, "
                    f"range {i['throughput_ratio_min']:.4f}..{i['throughput_ratio_max']:.4f}); "
                    f"sampler {i['sampler_cpu_us_per_reading']} us CPU per reading = "
                    f"{i['sampler_cpu_pct_of_one_core']:.2f} % of one core"
                )
            if impact.get("100ms", {}).get("rounds"):
                change = abs(impact["100ms"]["throughput_ratio_median"] - 1)
                good = change < LIMIT
                ok = ok and good
                verdicts.append(
                    f"{impact['worker_threads']} thread(s): sampler @ 100 ms changes throughput by "
                    f"{100 * change:.2f} % ({'<' if good else '>='} {100 * LIMIT:g} %)"
                )
            else:
                ok = False
                verdicts.append(
                    f"{impact['worker_threads']} thread(s): no quiet round at 100 ms, no verdict"
                )
    if sim is not None:
        sim.shutdown()
    if verdicts:
        summary["verdict"] = "; ".join(verdicts)
        print(summary["verdict"])
    if args.json:
        print(json.dumps(summary))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
