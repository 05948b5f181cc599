"""Benchmark the MIG placement solver against a mig-parted-style permutation search.

Run with ``python benchmarks/solver.py [--layouts 1000] [--seed 0]``. For every
catalog model with MIG it prints:

* the time to enumerate every maximal layout (plain profiles, and with the
  media-engine variants) and how many there are;
* the time for :func:`migperf.mig.solver.check_layout` on N seeded random
  layouts, and the same layouts through the baseline;
* how many layouts each one placed, and the speed ratio.

The baseline is what ``nvidia-mig-parted apply`` does: try every distinct
ordering of the requested profiles, creating each GPU instance where the
driver would put it (here: its lowest free allowed start) and giving up on an
ordering at the first refusal. It is slow on layouts that do not fit (every
ordering fails). On the catalog's geometries it places exactly the layouts the
solver places (checked exhaustively over all multisets); the two "placed"
columns show it, and the script stops if the baseline ever places a layout the
solver rejected.
"""

from __future__ import annotations

import argparse
import random
import time
from collections import Counter
from collections.abc import Sequence

from migperf.mig.layout import ResolvedInstance, ResolvedLayout
from migperf.mig.solver import MigGeometry, check_layout, enumerate_maximal_layouts
from migperf.nvml.catalog import MODELS
from migperf.nvml.types import GpuInstanceProfile

ENGINES = ("decoder", "encoder", "jpeg", "ofa")


def random_layouts(g: MigGeometry, n: int, seed: int) -> list[ResolvedLayout]:
    """Half drawn from parts of maximal layouts (mostly feasible), half random (mostly not)."""
    rnd = random.Random(seed)
    maximal = [g.resolve(lay) for lay in enumerate_maximal_layouts(g, include_me_variants=True)]
    placed = [p for p in g.profiles if p.placements]
    out = []
    for k in range(n):
        if k % 2 == 0:
            base = list(rnd.choice(maximal).instances)
            rnd.shuffle(base)
            insts = base[: rnd.randint(1, len(base))]
            # Sometimes add one more instance, which may or may not still fit.
            if rnd.random() < 0.5:
                p = rnd.choice(placed)
                insts.append(ResolvedInstance(p, None, (p.compute_slices,)))
        else:
            insts = [
                ResolvedInstance(p, None, (p.compute_slices,))
                for p in (rnd.choice(placed) for _ in range(rnd.randint(1, 7)))
            ]
        out.append(ResolvedLayout(tuple(insts)))
    return out


def _distinct_orderings(items: list[GpuInstanceProfile], i: int = 0):  # type: ignore[no-untyped-def]
    """Distinct permutations in place, as mig-parted's iteratePermutationsUntilSuccess makes them."""
    if i == len(items):
        yield items
        return
    seen: set[int] = set()
    for j in range(i, len(items)):
        if items[j].profile_id in seen:
            continue
        seen.add(items[j].profile_id)
        items[i], items[j] = items[j], items[i]
        yield from _distinct_orderings(items, i + 1)
        items[i], items[j] = items[j], items[i]


def naive_fits(profiles: Sequence[GpuInstanceProfile], g: MigGeometry) -> bool:
    """The baseline: every distinct ordering, each GI at its lowest free allowed start."""
    items = sorted(profiles, key=lambda p: (-p.compute_slices, -p.memory_slices, p.profile))
    for order in _distinct_orderings(items):
        used = 0
        compute = 0
        counts: Counter[int] = Counter()
        engines = dict.fromkeys(ENGINES, 0)
        ok = True
        for p in order:
            counts[p.profile_id] += 1
            compute += p.compute_slices
            for e in ENGINES:
                engines[e] += getattr(p.engines, e)
            if (
                counts[p.profile_id] > p.instances_total
                or compute > g.compute_slices
                or any(engines[e] > getattr(g.engines, e) for e in ENGINES)
            ):
                ok = False
                break
            for pl in p.placements:
                mask = ((1 << pl.size) - 1) << pl.start
                if not used & mask:
                    used |= mask
                    break
            else:
                ok = False
                break
        if ok:
            return True
    return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layouts", type=int, default=1000, help="random layouts per model")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    header = (
        f"{'model':<14}{'maximal':>9}{'enum ms':>9}{'+variants':>11}{'enum ms':>9}"
        f"{'solve ms':>10}{'placed':>8}{'naive ms':>10}{'placed':>8}{'speedup':>9}"
    )
    print(f"{args.layouts} seeded random layouts per model (seed {args.seed})")
    print(header)
    print("-" * len(header))
    for key, model in MODELS.items():
        if not model.mig_capable:
            continue
        g = MigGeometry.for_model(key)

        t0 = time.perf_counter()
        plain = enumerate_maximal_layouts(g)
        t_plain = time.perf_counter() - t0
        t0 = time.perf_counter()
        variants = enumerate_maximal_layouts(g, include_me_variants=True)
        t_var = time.perf_counter() - t0

        layouts = random_layouts(g, args.layouts, args.seed)
        t0 = time.perf_counter()
        exact = [check_layout(lay, g).ok for lay in layouts]
        t_exact = time.perf_counter() - t0
        t0 = time.perf_counter()
        naive = [naive_fits([i.profile for i in lay.instances], g) for lay in layouts]
        t_naive = time.perf_counter() - t0

        # The baseline's placements obey every rule, so this would be a solver bug.
        wrong = sum(n and not e for n, e in zip(naive, exact, strict=True))
        if wrong:
            raise SystemExit(f"{key}: the baseline placed {wrong} layouts the solver rejected")
        print(
            f"{key:<14}{len(plain):>9}{t_plain * 1e3:>9.1f}{len(variants):>11}{t_var * 1e3:>9.1f}"
            f"{t_exact * 1e3:>10.1f}{sum(exact):>8}{t_naive * 1e3:>10.1f}{sum(naive):>8}"
            f"{t_naive / t_exact:>8.1f}x"
        )


if __name__ == "__main__":
    main()
