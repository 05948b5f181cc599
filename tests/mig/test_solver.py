"""The placement solver, checked against brute force and against the simulated driver."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from migperf.errors import InsufficientResourcesError, UsageError
from migperf.mig.layout import ResolvedInstance, ResolvedLayout, parse_layout
from migperf.mig.solver import (
    MigGeometry,
    PlacedInstance,
    check_layout,
    enumerate_maximal_layouts,
    solve_layout,
)
from migperf.nvml.catalog import CI_ID_OF_SLICES, MODELS
from migperf.nvml.facade import Nvml
from migperf.nvml.types import GpuInstanceProfile, Placement

ENGINES = ("decoder", "encoder", "jpeg", "ofa")
MIG_MODELS = [k for k, m in MODELS.items() if m.mig_capable]


def geometry(key: str) -> MigGeometry:
    return MigGeometry.for_model(key)


def reason(key: str, text: str, occupied: Sequence[tuple[str, int]] = ()) -> str:
    g = geometry(key)
    occ = [(_profile(g, name), _placement(g, name, start)) for name, start in occupied]
    result = check_layout(g.resolve(text), g, occ)
    assert not result.ok
    return result.reason


def _profile(g: MigGeometry, name: str) -> GpuInstanceProfile:
    return next(p for p in g.profiles if p.profile == name)


def _placement(g: MigGeometry, name: str, start: int) -> Placement:
    return Placement(start, _profile(g, name).memory_slices)


# ------------------------------------------------------------ brute force
# Independent of the solver: every rule written out directly, every start of
# every instance tried in the order given (no grouping, no memo, no ordering).


def sums_ok(profiles: Sequence[GpuInstanceProfile], g: MigGeometry) -> bool:
    """Rules that do not depend on placement: counts, compute slices, engines."""
    counts = Counter(p.profile_id for p in profiles)
    if any(counts[p.profile_id] > p.instances_total for p in profiles):
        return False
    if sum(p.compute_slices for p in profiles) > g.full_profile.compute_slices:
        return False
    return all(
        sum(getattr(p.engines, e) for p in profiles) <= getattr(g.full_profile.engines, e)
        for e in ENGINES
    )


def brute_force(
    profiles: Sequence[GpuInstanceProfile],
    g: MigGeometry,
    occupied: Sequence[tuple[GpuInstanceProfile, Placement]] = (),
    pinned: Sequence[int | None] | None = None,
) -> list[int] | None:
    """Starts for ``profiles`` that satisfy every rule, or None. Exponential; small inputs only."""
    if not sums_ok([*profiles, *(p for p, _ in occupied)], g):
        return None
    used = [False] * g.placement_units
    for _, pl in occupied:
        for s in pl.slices():
            used[s] = True
    starts: list[int] = []

    def rec(i: int) -> bool:
        if i == len(profiles):
            return True
        p = profiles[i]
        options = [pl.start for pl in p.placements]
        want = pinned[i] if pinned is not None else None
        if want is not None:
            options = [want] if want in options else []
        for s in options:
            cells = range(s, s + p.memory_slices)
            if any(used[c] for c in cells):
                continue
            for c in cells:
                used[c] = True
            starts.append(s)
            if rec(i + 1):
                return True
            starts.pop()
            for c in cells:
                used[c] = False
        return False

    return starts if rec(0) else None


def assert_valid(
    placed: Sequence[PlacedInstance],
    g: MigGeometry,
    occupied: Sequence[tuple[GpuInstanceProfile, Placement]] = (),
) -> None:
    """Every rule holds for a solver answer (plus its compute-instance placements)."""
    assert sums_ok([*(i.profile for i in placed), *(p for p, _ in occupied)], g)
    cells: list[int] = []
    for i in placed:
        assert i.placement in i.profile.placements
        cells += list(i.placement.slices())
        ci_cells: list[int] = []
        for c in i.compute:
            assert c.start % c.size == 0
            assert c.start + c.size <= i.profile.compute_slices
            ci_cells += list(c.slices())
        assert len(ci_cells) == len(set(ci_cells))
    for _, pl in occupied:
        cells += list(pl.slices())
    assert len(cells) == len(set(cells))
    assert all(0 <= c < g.placement_units for c in cells)


def brute_maximal(g: MigGeometry, profiles: Sequence[GpuInstanceProfile]) -> set[tuple[str, ...]]:
    """Maximal multisets by trying every count vector."""

    def vectors(i: int, budget: int) -> list[tuple[int, ...]]:
        # Every count vector within the instance limits and the compute budget.
        if i == len(profiles):
            return [()]
        p = profiles[i]
        out = []
        for n in range(min(p.instances_total, budget // p.compute_slices) + 1):
            out += [(n, *rest) for rest in vectors(i + 1, budget - n * p.compute_slices)]
        return out

    def fits(counts: Sequence[int]) -> bool:
        members = [p for p, n in zip(profiles, counts, strict=True) for _ in range(n)]
        return brute_force(members, g) is not None

    feasible = {c for c in vectors(0, g.compute_slices) if fits(c)}
    out = set()
    for c in feasible:
        bumps = [tuple(n + (k == j) for k, n in enumerate(c)) for j in range(len(profiles))]
        if not any(b in feasible for b in bumps):
            out.add(
                tuple(sorted(p.profile for p, n in zip(profiles, c, strict=True) for _ in range(n)))
            )
    return out


def as_multisets(layouts: Sequence[object]) -> set[tuple[str, ...]]:
    return {tuple(sorted(str(i.profile) for i in lay.instances)) for lay in layouts}  # type: ignore[attr-defined]


# ---------------------------------------------------------------- geometry


@pytest.mark.parametrize(
    ("key", "units", "slices", "engines"),
    [
        ("a100-40gb", 8, 7, (5, 0, 1, 1)),
        ("a100-80gb", 8, 7, (5, 0, 1, 1)),
        ("a30", 4, 4, (4, 0, 1, 1)),
        ("h100-80gb", 8, 7, (7, 0, 7, 1)),
        ("h200", 8, 7, (7, 0, 7, 1)),
        ("rtx-pro-6000", 12, 4, (4, 4, 4, 1)),
    ],
)
def test_geometry_of_catalog_models(
    key: str, units: int, slices: int, engines: tuple[int, ...]
) -> None:
    g = geometry(key)
    assert (g.placement_units, g.compute_slices) == (units, slices)
    assert tuple(getattr(g.engines, e) for e in ENGINES) == engines


def test_geometry_errors() -> None:
    with pytest.raises(
        UsageError, match=r"^unknown GPU model 'a200'; models with MIG: a100-40gb, "
    ):
        MigGeometry.for_model("a200")
    with pytest.raises(UsageError, match=r"^l4 \(NVIDIA L4\) does not support MIG$"):
        MigGeometry.for_model("l4")
    with pytest.raises(UsageError, match="no GPU-instance profiles"):
        MigGeometry.from_profiles([])


# ------------------------------------------------------------------ solving


def test_nvidia_guide_example_is_feasible() -> None:
    g = geometry("a100-40gb")
    solution = solve_layout(g.resolve("1g.5gb,1g.5gb,2g.10gb,3g.20gb"), g)
    assert_valid(solution.instances, g)
    # The guide's own explicit placements are accepted as written.
    pinned = solve_layout(g.resolve("3g.20gb@4,2g.10gb@0,1g.5gb@2,1g.5gb@3"), g)
    assert str(pinned) == "3g.20gb@4,2g.10gb@0,1g.5gb@2,1g.5gb@3"


def test_order_written_does_not_matter() -> None:
    # 3g.40gb must take 4-7 so that 4g.40gb can have 0-3, whichever comes first.
    g = geometry("a100-80gb")
    for text in ("3g.40gb,4g.40gb", "4g.40gb,3g.40gb"):
        solution = solve_layout(g.resolve(text), g)
        starts = {i.name: i.placement.start for i in solution.instances}
        assert starts == {"4g.40gb": 0, "3g.40gb": 4}


def test_solution_keeps_layout_order_and_gives_a_creation_order() -> None:
    g = geometry("a100-80gb")
    solution = solve_layout(g.resolve("1g.10gb, 3g.40gb[2c,1c], 2g.20gb"), g)
    assert [i.name for i in solution.instances] == ["1g.10gb", "3g.40gb", "2g.20gb"]
    assert [i.name for i in solution.creation_order] == ["3g.40gb", "2g.20gb", "1g.10gb"]
    gi = solution.instances[1]
    assert gi.compute == (Placement(0, 2), Placement(2, 1))
    assert [CI_ID_OF_SLICES[c.size] for c in gi.compute] == [1, 0]


def test_explicit_starts_are_respected() -> None:
    g = geometry("a100-80gb")
    solution = solve_layout(g.resolve("1g.10gb@6, 1g.10gb*6"), g)
    assert solution.instances[0].placement == Placement(6, 1)
    assert sorted(i.placement.start for i in solution.instances[1:]) == [0, 1, 2, 3, 4, 5]


def test_occupied_instances_hold_their_slices() -> None:
    g = geometry("a100-80gb")
    occ = [(_profile(g, "3g.40gb"), Placement(0, 4))]
    solution = solve_layout(g.resolve("2g.20gb, 1g.10gb"), g, occ)
    assert_valid(solution.instances, g, occ)
    assert all(i.placement.start >= 4 for i in solution.instances)


@pytest.mark.parametrize(
    ("key", "text", "message"),
    [
        (
            "a100-80gb",
            "1g.10gb*7, 1g.20gb",
            "7 x 1g.10gb + 1g.20gb need 8 compute slices and 9 memory slices but the GPU has 7 and 8",
        ),
        (
            "a100-80gb",
            "4g.40gb, 2g.20gb*2",
            "4g.40gb + 2 x 2g.20gb need 8 compute slices but the GPU has 7",
        ),
        (
            "a100-80gb",
            "3g.40gb, 2g.20gb, 1g.20gb*2",
            "3g.40gb + 2g.20gb + 2 x 1g.20gb need 10 memory slices but the GPU has 8",
        ),
        (
            "a100-80gb",
            "3g.40gb@0, 4g.40gb",
            "4g.40gb can only start at slice 0, which 3g.40gb@0 occupies",
        ),
        (
            "a100-80gb",
            "1g.10gb+me, 7g.80gb",
            "1g.10gb+me and 7g.80gb both need the GPU's only OFA engine",
        ),
        (
            "a100-80gb",
            "3g.40gb*3",
            "the GPU allows at most 2 instances of 3g.40gb, but 3 were requested",
        ),
        (
            "a100-80gb",
            "1g.10gb+me*2",
            "the GPU allows at most 1 instance of 1g.10gb+me, but 2 were requested",
        ),
        (
            "a100-80gb",
            "3g.40gb@4, 3g.40gb@4",
            "3g.40gb@4 and 3g.40gb@4 both need memory slices 4-7",
        ),
        (
            "a100-80gb",
            "3g.40gb@0, 1g.10gb*4",
            "no arrangement of these placements fits in free memory slices 4-7: "
            "4 x 1g.10gb can start at slices 4-6",
        ),
        (
            "a30",
            "1g.6gb+me, 2g.12gb+me",
            "1g.6gb+me and 2g.12gb+me both need the GPU's only OFA engine",
        ),
        (
            "rtx-pro-6000",
            "1g.24gb+me.all, 1g.24gb",
            "1g.24gb+me.all takes all 4 of the GPU's video decoders (NVDEC), leaving none for 1g.24gb",
        ),
        (
            "rtx-pro-6000",
            "1g.24gb+me.all, 1g.24gb+me",
            "1g.24gb+me.all and 1g.24gb+me both need the GPU's only OFA engine",
        ),
    ],
)
def test_why_a_layout_does_not_fit(key: str, text: str, message: str) -> None:
    assert reason(key, text) == message


def test_me_all_leaves_room_for_no_me_profiles() -> None:
    g = geometry("rtx-pro-6000")
    assert check_layout(g.resolve("1g.24gb+me.all, 1g.24gb-me*3"), g).ok
    assert check_layout(g.resolve("2g.48gb+me.all, 2g.48gb-me"), g).ok


def test_reasons_with_existing_instances() -> None:
    assert reason("a100-80gb", "4g.40gb", occupied=[("1g.10gb", 2)]) == (
        "4g.40gb can only start at slice 0, which the existing 1g.10gb at 2:1 occupies"
    )
    assert reason("a100-80gb", "3g.40gb*2", occupied=[("3g.40gb", 4)]) == (
        "the GPU allows at most 2 instances of 3g.40gb, but 1 already exists and 2 were requested"
    )
    assert reason("a100-80gb", "4g.40gb", occupied=[("3g.40gb", 4), ("1g.10gb", 0)]) == (
        "4g.40gb needs 4 compute slices and 4 memory slices but only 3 and 3 are free"
    )
    assert reason("a100-80gb", "4g.40gb", occupied=[("2g.20gb", 0), ("2g.20gb", 2)]) == (
        "4g.40gb needs 4 compute slices but only 3 of the GPU's 7 are free"
    )
    assert reason("a100-80gb", "2g.20gb@4", occupied=[("1g.10gb", 5)]) == (
        "2g.20gb@4 and the existing 1g.10gb at 5:1 both need memory slice 5"
    )
    assert reason("a100-80gb", "2g.20gb*2", occupied=[("1g.10gb", 1), ("1g.10gb", 5)]) == (
        "no arrangement of these placements fits in free memory slices 0, 2-4, 6 and 7: "
        "2 x 2g.20gb can start at slice 2"
    )


def test_solve_raises_with_a_hint() -> None:
    g = geometry("a100-80gb")
    with pytest.raises(InsufficientResourcesError) as exc:
        solve_layout(g.resolve("3g.40gb@0, 4g.40gb"), g)
    assert exc.value.message == (
        "cannot fit 4g.40gb,3g.40gb@0 on this GPU: "
        "4g.40gb can only start at slice 0, which 3g.40gb@0 occupies"
    )
    assert exc.value.hint == "drop the explicit @START placements to let migperf choose"


def test_check_layout_reports_instead_of_raising() -> None:
    g = geometry("a100-80gb")
    bad = check_layout(g.resolve("7g.80gb, 1g.10gb"), g)
    assert (bad.ok, bad.placements, bad.solution) == (False, (), None)
    assert "migperf mig layouts" in bad.hint
    good = check_layout(g.resolve("7g.80gb"), g)
    assert good.ok and good.reason == ""
    assert [str(p) for p in good.placements] == ["7g.80gb@0"]


def test_hand_built_layout_with_a_bad_split_is_reported() -> None:
    g = geometry("a100-80gb")
    seven = _profile(g, "7g.80gb")
    # 4c+4c, not 4c+3c: compute instances may start off the multiples of their
    # size (the grid is unverified and drivers place them), so 4c+3c now fits.
    layout = ResolvedLayout((ResolvedInstance(seven, None, (4, 4)),))
    assert check_layout(layout, g).reason == (
        "compute instances 4c+4c do not fit in the 7 compute slices of 7g.80gb"
    )


def test_empty_layout_fits() -> None:
    g = geometry("a30")
    assert check_layout(g.resolve("none"), g).ok


# -------------------------------------------------------------- enumeration


def test_a100_base_profiles_match_nvidias_table() -> None:
    """NVIDIA's A100 guide draws 19 configurations of 1g/2g/3g/4g/7g (no 1g.10gb).

    Brute force over placements finds exactly 19 maximal arrangements; as
    multisets (placements ignored) they are 12.
    """
    g = geometry("a100-40gb")
    base = [
        p for p in g.profiles if p.profile in {"1g.5gb", "2g.10gb", "3g.20gb", "4g.20gb", "7g.40gb"}
    ]
    bg = MigGeometry.from_profiles(base)
    layouts = enumerate_maximal_layouts(bg)
    assert [str(lay) for lay in layouts] == [
        "7g.40gb",
        "4g.20gb,3g.20gb",
        "4g.20gb,2g.10gb,1g.5gb",
        "4g.20gb,1g.5gb*3",
        "3g.20gb*2",
        "3g.20gb,2g.10gb*2",
        "3g.20gb,2g.10gb,1g.5gb*2",
        "3g.20gb,1g.5gb*4",
        "2g.10gb*3,1g.5gb",
        "2g.10gb*2,1g.5gb*3",
        "2g.10gb,1g.5gb*5",
        "1g.5gb*7",
    ]
    cands = [(p, pl.start) for p in base for pl in p.placements]

    def fits(arr: list[tuple[GpuInstanceProfile, int]]) -> bool:
        return brute_force([p for p, _ in arr], bg, pinned=[s for _, s in arr]) is not None

    arrangements = 0

    def rec(i: int, arr: list[tuple[GpuInstanceProfile, int]]) -> None:
        nonlocal arrangements
        if i == len(cands):
            arrangements += all(not fits([*arr, c]) for c in cands if c not in arr)
            return
        rec(i + 1, arr)
        if fits([*arr, cands[i]]):
            rec(i + 1, [*arr, cands[i]])

    rec(0, [])
    assert arrangements == 19
    assert {
        tuple(sorted(str(i.profile) for i in lay.instances)) for lay in layouts
    } == brute_maximal(bg, base)


@pytest.mark.parametrize(
    ("key", "plain", "with_variants"),
    [
        ("a100-40gb", 28, 44),
        ("a100-80gb", 28, 44),
        ("h100-80gb", 28, 44),
        ("h100-nvl", 28, 44),
        ("h200", 28, 44),
        ("a30", 4, 8),
        ("rtx-pro-6000", 4, 64),
    ],
)
def test_maximal_layout_counts(key: str, plain: int, with_variants: int) -> None:
    g = geometry(key)
    assert len(enumerate_maximal_layouts(g)) == plain
    assert len(enumerate_maximal_layouts(g, include_me_variants=True)) == with_variants


@pytest.mark.parametrize("key", ["a100-40gb", "a30", "rtx-pro-6000"])
@pytest.mark.parametrize("variants", [False, True])
def test_maximal_layouts_equal_brute_force(key: str, variants: bool) -> None:
    g = geometry(key)
    considered = [
        p for p in g.profiles if variants or p.profile.count("+") + p.profile.count("-") == 0
    ]
    assert as_multisets(
        enumerate_maximal_layouts(g, include_me_variants=variants)
    ) == brute_maximal(g, considered)


def test_small_gpus_list_their_layouts() -> None:
    assert [str(x) for x in enumerate_maximal_layouts(geometry("a30"))] == [
        "4g.24gb",
        "2g.12gb*2",
        "2g.12gb,1g.6gb*2",
        "1g.6gb*4",
    ]
    assert [str(x) for x in enumerate_maximal_layouts(geometry("rtx-pro-6000"))] == [
        "4g.96gb",
        "2g.48gb*2",
        "2g.48gb,1g.24gb*2",
        "1g.24gb*4",
    ]


def test_every_maximal_layout_solves() -> None:
    for key in MIG_MODELS:
        g = geometry(key)
        for lay in enumerate_maximal_layouts(g):
            solution = solve_layout(g.resolve(lay), g)
            assert_valid(solution.instances, g)


# ----------------------------------------------------------- the simulator


@pytest.mark.parametrize(
    ("key", "variants", "every"),
    [("a100-40gb", False, 4), ("a30", True, 1), ("rtx-pro-6000", True, 8)],
)
def test_simulated_driver_accepts_maximal_layouts(
    sim: Callable[..., Nvml], key: str, variants: bool, every: int
) -> None:
    """The solver's rules are the driver's: each solution creates cleanly, largest first.

    (A sample on the larger GPUs: the simulator writes its state to disk on
    every call, so all 28 + 64 layouts would take seconds.)
    """
    nvml = sim(key)
    g = MigGeometry.from_profiles(nvml.gpu_instance_profiles(0))
    sample = enumerate_maximal_layouts(g, include_me_variants=variants)[::every]
    if key == "a100-40gb":
        sample += [g.resolve("7g.40gb[3c,2c,1c*2]").to_spec(), parse_layout("3g.20gb[2c,1c]*2")]
    for lay in sample:
        solution = solve_layout(g.resolve(lay), g)
        created = []
        for inst in solution.creation_order:
            gi_id = nvml.create_gpu_instance(
                0, inst.profile.profile_id, inst.placement.start, inst.placement.size
            )
            for c in inst.compute:
                nvml.create_compute_instance(0, gi_id, CI_ID_OF_SLICES[c.size], c.start)
            created.append((gi_id, len(inst.compute)))
        for gi in nvml.gpu_instances(0):
            for ci in gi.compute_instances:
                nvml.destroy_compute_instance(0, gi.gi_id, ci.ci_id)
            nvml.destroy_gpu_instance(0, gi.gi_id)
        assert len(created) == len(lay)


# ------------------------------------------------------------------ properties

_KEYS = ["a100-40gb", "a30", "rtx-pro-6000"]
_GEOMETRIES = {k: geometry(k) for k in _KEYS}


def _layout_on(g: MigGeometry, pinned: bool) -> st.SearchStrategy[ResolvedLayout]:
    @st.composite
    def draw_layout(draw: st.DrawFn) -> ResolvedLayout:
        instances = []
        for _ in range(draw(st.integers(0, 5))):
            p = draw(st.sampled_from(g.profiles))
            start = None
            if pinned and draw(st.integers(0, 4)) == 0:
                # Mostly allowed starts; sometimes one the profile cannot use.
                start = draw(st.sampled_from([pl.start for pl in p.placements] + [1]))
            instances.append(ResolvedInstance(p, start, (p.compute_slices,)))
        return ResolvedLayout(tuple(instances))

    return draw_layout()


@st.composite
def layouts(draw: st.DrawFn) -> tuple[MigGeometry, ResolvedLayout]:
    g = _GEOMETRIES[draw(st.sampled_from(_KEYS))]
    return g, draw(_layout_on(g, pinned=True))


@st.composite
def with_occupied(draw: st.DrawFn) -> tuple[MigGeometry, ResolvedLayout, ResolvedLayout]:
    g = _GEOMETRIES[draw(st.sampled_from(_KEYS))]
    return g, draw(_layout_on(g, pinned=False)), draw(_layout_on(g, pinned=True))


@settings(max_examples=200, deadline=None)
@given(layouts())
def test_solver_agrees_with_brute_force(case: tuple[MigGeometry, ResolvedLayout]) -> None:
    g, layout = case
    result = check_layout(layout, g)
    if result.ok:
        assert_valid(result.placements, g)
        for inst, placed in zip(layout.instances, result.placements, strict=True):
            assert placed.profile == inst.profile
            if inst.start is not None:
                assert placed.placement.start == inst.start
    else:
        assert result.reason
        assert (
            brute_force(
                [i.profile for i in layout.instances], g, pinned=[i.start for i in layout.instances]
            )
            is None
        )


@settings(max_examples=100, deadline=None)
@given(layouts(), st.randoms(use_true_random=False))
def test_input_order_never_changes_feasibility(
    case: tuple[MigGeometry, ResolvedLayout], rnd
) -> None:  # type: ignore[no-untyped-def]
    g, layout = case
    shuffled = list(layout.instances)
    rnd.shuffle(shuffled)
    assert check_layout(ResolvedLayout(tuple(shuffled)), g).ok == check_layout(layout, g).ok


@settings(max_examples=150, deadline=None)
@given(with_occupied())
def test_occupied_instances_agree_with_brute_force(
    case: tuple[MigGeometry, ResolvedLayout, ResolvedLayout],
) -> None:
    g, existing, layout = case
    base = check_layout(existing, g)
    if not base.ok:
        return
    occupied = [(i.profile, i.placement) for i in base.placements]
    result = check_layout(layout, g, occupied)
    if result.ok:
        assert_valid(result.placements, g, occupied)
    else:
        pinned = [i.start for i in layout.instances]
        assert brute_force([i.profile for i in layout.instances], g, occupied, pinned) is None
