"""Do simulated MIG slices measure like slices? Throughput of 1g, 2g, 3g and 7g relative to 7g.

On a simulated A100-80GB (``migperf --simulate a100-80gb``) every worker runs
on this host's CPU, emulating its slice (``migperf.bench.emulation``): it gets
the share of the host's cores its slice's SMs are of the GPU's 98. So a
slice's throughput relative to 7g should follow the SM ratios 14/98, 28/98
and 42/98. Each round measures gemm and resnet18 inference at a large batch
on a 7g.80gb slice and on the 1g.10gb, 2g.20gb and 3g.40gb slices of a second
layout, one worker at a time, through the launch path every caller uses. The
best throughput of each slice over the rounds is divided by the best of 7g and
reported next to the SM ratio.

The emulation holds a CPU-time budget, which load from other processes cannot
raise, so the throttled slices measure alike round after round; the 7g is not
throttled and takes every dip of a shared host. Load only ever lowers a
throughput, so each one's best round is its least disturbed (as ``timeit``
takes the fastest run); the load average and every round are printed with the
table.

Run: ``.venv/bin/python benchmarks/emulation.py [--rounds 3] [--duration 3]``.
Exits 1 when a ratio is more than 20 % off its SM ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from typing import Any

from migperf.bench.device import worker_env
from migperf.bench.launch import LaunchJob, launch_jobs
from migperf.bench.spec import BenchSpec
from migperf.mig import apply_layout
from migperf.nvml import open_nvml
from migperf.nvml.facade import Nvml

TOLERANCE = 0.20
LAYOUTS = ("7g.80gb", "3g.40gb,2g.20gb,1g.10gb")
PROFILES = ("1g.10gb", "2g.20gb", "3g.40gb", "7g.80gb")
WORKLOADS: dict[str, dict[str, Any]] = {
    # 16 products of 512 x 512 per step: about 70 ms on two cores.
    "gemm": {"batch_size": 16, "model_args": {"n": 512}},
    # A batch of 64 images of 64 x 64: about 0.2 s on two cores.
    "resnet18": {"batch_size": 64, "model_args": {"image_size": 64}},
}


def _devices(nvml: Nvml, layout: str) -> dict[str, tuple[str, int]]:
    """Profile -> (MIG UUID, SMs) of the layout applied on GPU 0."""
    apply_layout(nvml, 0, layout)
    return {d.name.rsplit(" ", 1)[-1]: (d.mig_uuid, d.sm_count) for d in nvml.mig_devices(0)}


def _measure(nvml: Nvml, workload: str, uuid: str, duration_s: float) -> float:
    spec = BenchSpec(
        workload=workload,
        task="infer",
        warmup_iterations=2,
        min_iterations=3,
        min_duration_s=duration_s,
        max_duration_s=duration_s * 10,
        simulated=True,
        expect_device="cpu",
        device_label=uuid,
        **WORKLOADS[workload],
    )
    env = worker_env(uuid, simulated=True)
    (result,) = launch_jobs(
        [LaunchJob(spec, env, uuid)], simulated=True, timeout_s=600.0, nvml=nvml
    )
    if result.status != "ok" or result.throughput is None:
        detail = result.error.message if result.error else "no throughput"
        raise SystemExit(f"{workload} on {uuid}: {result.status}: {detail}")
    return result.throughput.samples_per_s


def main(argv: list[str] | None = None) -> int:
    """Measure, print the table (and JSON with --json), return 1 past the tolerance."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=float, default=3.0, help="seconds per measurement")
    ap.add_argument("--workloads", default=",".join(WORKLOADS))
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    workloads = [w for w in args.workloads.split(",") if w]
    # A private state directory: the simulated GPU is this script's alone.
    state = tempfile.TemporaryDirectory(prefix="migperf-emulation-")
    os.environ["MIGPERF_STATE_DIR"] = state.name
    load_before = os.getloadavg()
    rates: dict[str, dict[str, list[float]]] = {w: {p: [] for p in PROFILES} for w in workloads}
    sms: dict[str, int] = {}
    with open_nvml("a100-80gb") as nvml:
        for r in range(args.rounds):
            for workload in workloads:
                for layout in LAYOUTS:
                    for profile, (uuid, sm) in _devices(nvml, layout).items():
                        sms[profile] = sm
                        rate = _measure(nvml, workload, uuid, args.duration)
                        rates[workload][profile].append(rate)
                        print(
                            f"round {r + 1} {workload} {profile}: {rate:.1f} samples/s",
                            file=sys.stderr,
                        )
    load_after = os.getloadavg()
    state.cleanup()
    full = sms["7g.80gb"]
    rows = []
    worst = 0.0
    for workload in workloads:
        reference = max(rates[workload]["7g.80gb"])
        for profile in PROFILES:
            expected = sms[profile] / full
            best = max(rates[workload][profile])
            off = best / reference / expected - 1.0
            worst = max(worst, abs(off))
            rows.append(
                {
                    "workload": workload,
                    "profile": profile,
                    "sms": f"{sms[profile]}/{full}",
                    "sm_ratio": expected,
                    "samples_per_s": best,
                    "ratio_to_7g": best / reference,
                    "off": off,
                    "rounds": rates[workload][profile],
                }
            )
    print(
        f"simulated a100-80gb on {os.cpu_count()} CPU cores, {args.rounds} round(s) of "
        f"{args.duration:g} s; load average {load_before[0]:.2f} before, {load_after[0]:.2f} after"
    )
    print(
        f"{'workload':<9} {'slice':<8} {'SMs':>6} {'SM ratio':>9} {'best/s':>8} "
        f"{'vs 7g':>7} {'off':>7}  every round (samples/s)"
    )
    for row in rows:
        print(
            f"{row['workload']:<9} {row['profile']:<8} {row['sms']:>6} {row['sm_ratio']:>9.3f} "
            f"{row['samples_per_s']:>8.1f} {row['ratio_to_7g']:>7.3f} {row['off']:>+7.1%}  "
            + " ".join(f"{x:.0f}" for x in row["rounds"])
        )
    if args.json:
        print(json.dumps(rows, indent=2))
    if worst > TOLERANCE:
        print(f"FAIL: a ratio is {worst:.1%} off its SM ratio (limit {TOLERANCE:.0%})")
        return 1
    print(f"ok: every ratio within {worst:.1%} of its SM ratio (limit {TOLERANCE:.0%})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
