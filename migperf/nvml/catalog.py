"""The catalog of GPU models migperf knows: MIG profiles, placements, engines.

These are facts, not code: every number comes from
``docs/reference/mig-facts.md`` and keeps that sheet's confidence mark:

* ``V`` verified: copied from NVIDIA documentation or a real ``nvidia-smi``
  capture;
* ``D`` derived: computed from verified data (e.g. GiB x 1024);
* ``U`` uncertain: a documented best guess.

The simulated NVML (:mod:`migperf.nvml.sim`) serves these tables through the
real pynvml call surface, and ``migperf mig layouts --model`` plans from them
without a GPU. Code that talks to a real GPU never reads this module: it asks
the driver.
"""

from __future__ import annotations

from dataclasses import dataclass

from migperf.nvml.types import Engines, GpuInstanceProfile, Placement

# NVML GPU-instance profile index constants (nvml.h, docs/reference/mig-facts.md section 2.1).
P_1_SLICE = 0x0
P_2_SLICE = 0x1
P_3_SLICE = 0x2
P_4_SLICE = 0x3
P_7_SLICE = 0x4
P_8_SLICE = 0x5
P_6_SLICE = 0x6
P_1_SLICE_REV1 = 0x7
P_2_SLICE_REV1 = 0x8
P_1_SLICE_REV2 = 0x9
P_1_SLICE_GFX = 0xA
P_2_SLICE_GFX = 0xB
P_4_SLICE_GFX = 0xC
P_1_SLICE_NO_ME = 0xD
P_2_SLICE_NO_ME = 0xE
P_1_SLICE_ALL_ME = 0xF
P_2_SLICE_ALL_ME = 0x10
P_3_SLICE_GFX = 0x11
PROFILE_COUNT = 0x12

#: GPU slices ("g") each index constant stands for (go-nvlib rule, section 7).
SLICES_OF_INDEX: dict[int, int] = {
    P_1_SLICE: 1,
    P_2_SLICE: 2,
    P_3_SLICE: 3,
    P_4_SLICE: 4,
    P_7_SLICE: 7,
    P_8_SLICE: 8,
    P_6_SLICE: 6,
    P_1_SLICE_REV1: 1,
    P_2_SLICE_REV1: 2,
    P_1_SLICE_REV2: 1,
    P_1_SLICE_GFX: 1,
    P_2_SLICE_GFX: 2,
    P_4_SLICE_GFX: 4,
    P_1_SLICE_NO_ME: 1,
    P_2_SLICE_NO_ME: 2,
    P_1_SLICE_ALL_ME: 1,
    P_2_SLICE_ALL_ME: 2,
    P_3_SLICE_GFX: 3,
}

#: Name suffix each index constant carries (section 7).
SUFFIX_OF_INDEX: dict[int, str] = {
    P_1_SLICE_REV1: "+me",
    P_2_SLICE_REV1: "+me",
    P_1_SLICE_GFX: "+gfx",
    P_2_SLICE_GFX: "+gfx",
    P_4_SLICE_GFX: "+gfx",
    P_3_SLICE_GFX: "+gfx",
    P_1_SLICE_NO_ME: "-me",
    P_2_SLICE_NO_ME: "-me",
    P_1_SLICE_ALL_ME: "+me.all",
    P_2_SLICE_ALL_ME: "+me.all",
}

# Compute-instance profile constants; CI profile ids equal them (section 2.2).
CI_1_SLICE_REV1 = 0x7
CI_7_SLICE_NVL = 0x8
#: Compute slices of each compute-instance profile id. Two pairs share a size
#: (and so a name): 1_SLICE (0) and 1_SLICE_REV1 (7), 7_SLICE (4) and 7_SLICE_NVL (8).
CI_SLICES_OF_ID: dict[int, int] = {
    0: 1,
    1: 2,
    2: 3,
    3: 4,
    4: 7,
    5: 8,
    6: 6,
    CI_1_SLICE_REV1: 1,
    CI_7_SLICE_NVL: 7,
}
#: The plain compute-instance profile of each size (never a REV1 or NVL variant),
#: written out because inverting :data:`CI_SLICES_OF_ID` would pick the variants.
CI_ID_OF_SLICES: dict[int, int] = {1: 0, 2: 1, 3: 2, 4: 3, 7: 4, 8: 5, 6: 6}


@dataclass(frozen=True)
class ProfileFact:
    """One row of ``nvidia-smi mig -lgip`` plus its ``-lgipp`` placements."""

    index: int
    profile_id: int
    name: str
    compute_slices: int
    memory_slices: int
    instances: int
    sm_count: int
    copy_engines: int
    decoders: int
    encoders: int
    jpegs: int
    ofas: int
    memory_mib: int
    starts: tuple[int, ...]
    confidence: str = "V"
    #: The starts the driver tries, in order, when a GPU instance is created
    #: without a placement; empty means lowest first.
    create_order: tuple[int, ...] = ()

    def default_starts(self) -> tuple[int, ...]:
        """The starts in the order creation without a placement tries them."""
        return self.create_order or tuple(sorted(self.starts))

    def to_profile(self) -> GpuInstanceProfile:
        """This fact as the facade's type (``instances_free`` unknown: no live GPU)."""
        return GpuInstanceProfile(
            profile=self.name,
            profile_id=self.profile_id,
            index=self.index,
            compute_slices=self.compute_slices,
            memory_slices=self.memory_slices,
            instances_total=self.instances,
            instances_free=None,
            sm_count=self.sm_count,
            memory_mib=self.memory_mib,
            engines=Engines(self.copy_engines, self.decoders, self.encoders, self.jpegs, self.ofas),
            placements=tuple(Placement(s, self.memory_slices) for s in self.starts),
        )


@dataclass(frozen=True)
class GpuModel:
    """A GPU model the simulator can stand in for."""

    key: str
    name: str
    pci_device_id: int
    memory_total_mib: int
    architecture: int  # NVML_DEVICE_ARCH_*
    compute_capability: tuple[int, int]
    mig_capable: bool
    placement_units: int
    compute_slices: int
    profiles: tuple[ProfileFact, ...]
    power_limit_w: int
    idle_power_w: int
    max_sm_clock_mhz: int
    max_mem_clock_mhz: int
    sources: str
    confidence: str

    def profile_by_id(self, profile_id: int) -> ProfileFact | None:
        """The profile with this nvidia-smi id, or None."""
        return next((p for p in self.profiles if p.profile_id == profile_id), None)

    def profile_by_index(self, index: int) -> ProfileFact | None:
        """The profile for this NVML index constant, or None."""
        return next((p for p in self.profiles if p.index == index), None)

    @property
    def full_profile(self) -> ProfileFact:
        """The profile that spans the whole GPU (7g on A100/H100, 4g on A30)."""
        return max(self.profiles, key=lambda p: (p.memory_slices, p.compute_slices))


ARCH_AMPERE = 7
ARCH_ADA = 8
ARCH_HOPPER = 9
ARCH_BLACKWELL = 10

ARCH_NAMES = {
    ARCH_AMPERE: "Ampere",
    ARCH_ADA: "Ada",
    ARCH_HOPPER: "Hopper",
    ARCH_BLACKWELL: "Blackwell",
}


def _eight_slice(
    mem: dict[int, tuple[str, int]],
    sms: dict[int, int],
    engines: dict[int, tuple[int, int, int, int, int]],
    confidence: dict[int, str] | None = None,
) -> tuple[ProfileFact, ...]:
    """Profiles of an 8-memory-slice / 7-compute-slice GPU (A100, H100, H200).

    ``mem`` maps profile id to (name, MiB); ``engines`` to (CE, DEC, ENC, JPEG, OFA).
    Ids, slice counts, instance limits and placements are the same on every
    8-slice GPU (docs/reference/mig-facts.md sections 2.2 and 4.1).
    """
    # id: (index constant, compute slices, memory slices, instances, starts,
    # the order creation without a placement tries them). The orders are what
    # A100 and H100 drivers were seen to do: 1g at 6,4,5,0,1,2,3 (section 5),
    # 2g at 4,0,2 and 3g at 4 first (reported on A100/H100); the 1g+me and
    # 1g double-memory orders follow the 1g one [U].
    geometry = {
        19: (P_1_SLICE, 1, 1, 7, (0, 1, 2, 3, 4, 5, 6), (6, 4, 5, 0, 1, 2, 3)),
        20: (P_1_SLICE_REV1, 1, 1, 1, (0, 1, 2, 3, 4, 5, 6), (6, 4, 5, 0, 1, 2, 3)),
        15: (P_1_SLICE_REV2, 1, 2, 4, (0, 2, 4, 6), (6, 4, 0, 2)),
        14: (P_2_SLICE, 2, 2, 3, (0, 2, 4), (4, 0, 2)),
        9: (P_3_SLICE, 3, 4, 2, (0, 4), (4, 0)),
        5: (P_4_SLICE, 4, 4, 1, (0,), (0,)),
        0: (P_7_SLICE, 7, 8, 1, (0,), (0,)),
    }
    out = []
    for pid, (index, cs, ms, inst, starts, order) in geometry.items():
        if pid not in mem:
            continue
        name, mib = mem[pid]
        ce, dec, enc, jpeg, ofa = engines[pid]
        out.append(
            ProfileFact(
                index=index,
                profile_id=pid,
                name=name,
                compute_slices=cs,
                memory_slices=ms,
                instances=inst,
                sm_count=sms[pid],
                copy_engines=ce,
                decoders=dec,
                encoders=enc,
                jpegs=jpeg,
                ofas=ofa,
                memory_mib=mib,
                starts=starts,
                confidence=(confidence or {}).get(pid, "V"),
                create_order=order,
            )
        )
    return tuple(out)


_A100_SMS = {19: 14, 20: 14, 15: 14, 14: 28, 9: 42, 5: 56, 0: 98}
_A100_ENGINES = {
    19: (1, 0, 0, 0, 0),
    20: (1, 1, 0, 1, 1),
    15: (1, 1, 0, 0, 0),
    14: (2, 1, 0, 0, 0),
    9: (3, 2, 0, 0, 0),
    5: (4, 2, 0, 0, 0),
    0: (7, 5, 0, 1, 1),
}
_HOPPER_SMS = {19: 16, 20: 16, 15: 26, 14: 32, 9: 60, 5: 64, 0: 132}
_HOPPER_ENGINES = {
    19: (1, 1, 0, 1, 0),
    20: (1, 1, 0, 1, 1),
    15: (1, 1, 0, 1, 0),
    14: (2, 2, 0, 2, 0),
    9: (3, 3, 0, 3, 0),
    5: (4, 4, 0, 4, 0),
    0: (8, 7, 0, 7, 1),
}

# Memory sizes are driver dependent (docs/reference/mig-facts.md 0.1 #2). The simulator plays
# one driver, R580 (580.65.06), and uses the sizes observed with new drivers.
SIM_DRIVER_VERSION = "580.65.06"
SIM_CUDA_DRIVER_VERSION = 13000
SIM_NVML_VERSION = "13.580.65.06"

MODELS: dict[str, GpuModel] = {}


def _add(model: GpuModel) -> None:
    MODELS[model.key] = model


_add(
    GpuModel(
        key="a100-40gb",
        name="NVIDIA A100-SXM4-40GB",
        pci_device_id=0x20B010DE,
        memory_total_mib=40960,
        architecture=ARCH_AMPERE,
        compute_capability=(8, 0),
        mig_capable=True,
        placement_units=8,
        compute_slices=7,
        # Variant A of section 3.1 (it matches the R580 guide's 3g.20gb device sizes).
        profiles=_eight_slice(
            {
                19: ("1g.5gb", 4864),
                20: ("1g.5gb+me", 4864),
                15: ("1g.10gb", 9984),
                14: ("2g.10gb", 9984),
                9: ("3g.20gb", 20096),
                5: ("4g.20gb", 20096),
                0: ("7g.40gb", 40448),
            },
            _A100_SMS,
            _A100_ENGINES,
        ),
        power_limit_w=400,
        idle_power_w=55,
        max_sm_clock_mhz=1410,
        max_mem_clock_mhz=1215,
        sources="docs/reference/mig-facts.md 3.1 (S1, S8g-S8l), 4.1; parent memory 40960 MiB [U]",
        confidence="profiles, ids, SMs, engines, placements [V]; memory MiB [D]; parent memory [U]",
    )
)

_add(
    GpuModel(
        key="a100-80gb",
        name="NVIDIA A100-SXM4-80GB",
        pci_device_id=0x20B210DE,
        memory_total_mib=81920,
        architecture=ARCH_AMPERE,
        compute_capability=(8, 0),
        mig_capable=True,
        placement_units=8,
        compute_slices=7,
        profiles=_eight_slice(
            {
                19: ("1g.10gb", 9728),
                20: ("1g.10gb+me", 9728),
                15: ("1g.20gb", 19968),
                14: ("2g.20gb", 19968),
                9: ("3g.40gb", 40192),
                5: ("4g.40gb", 40192),
                0: ("7g.80gb", 80896),
            },
            _A100_SMS,
            _A100_ENGINES,
            confidence={15: "U"},
        ),
        power_limit_w=400,
        idle_power_w=60,
        max_sm_clock_mhz=1410,
        max_mem_clock_mhz=1593,
        sources="docs/reference/mig-facts.md 3.2 (S1, S8d driver 515.86.01), 4.1",
        confidence="ids, SMs, engines, placements [V]; memory MiB [D]; 1g.20gb memory [U]",
    )
)

_add(
    GpuModel(
        key="a30",
        name="NVIDIA A30",
        pci_device_id=0x20B710DE,
        memory_total_mib=24576,
        architecture=ARCH_AMPERE,
        compute_capability=(8, 0),
        mig_capable=True,
        placement_units=4,
        compute_slices=4,
        profiles=(
            ProfileFact(P_1_SLICE, 14, "1g.6gb", 1, 1, 4, 14, 1, 1, 0, 0, 0, 5952, (0, 1, 2, 3)),
            ProfileFact(
                P_1_SLICE_REV1, 21, "1g.6gb+me", 1, 1, 1, 14, 1, 1, 0, 1, 1, 5952, (0, 1, 2, 3)
            ),
            ProfileFact(P_2_SLICE, 5, "2g.12gb", 2, 2, 2, 28, 2, 2, 0, 0, 0, 11968, (0, 2)),
            ProfileFact(P_2_SLICE_REV1, 6, "2g.12gb+me", 2, 2, 1, 28, 2, 2, 0, 1, 1, 11968, (0, 2)),
            ProfileFact(P_4_SLICE, 0, "4g.24gb", 4, 4, 1, 56, 4, 4, 0, 1, 1, 24000, (0,)),
        ),
        power_limit_w=165,
        idle_power_w=30,
        max_sm_clock_mhz=1440,
        max_mem_clock_mhz=1215,
        sources="docs/reference/mig-facts.md 3.3 (S1, S8e, S8f), 4.2; parent memory 24576 MiB [U]",
        confidence="ids, SMs, placements [V]; memory MiB [D]; 1g.6gb NVDEC from capture (S1 disagrees)",
    )
)

_add(
    GpuModel(
        key="h100-80gb",
        name="NVIDIA H100 80GB HBM3",
        pci_device_id=0x233010DE,
        memory_total_mib=81559,
        architecture=ARCH_HOPPER,
        compute_capability=(9, 0),
        mig_capable=True,
        placement_units=8,
        compute_slices=7,
        profiles=_eight_slice(
            {
                19: ("1g.10gb", 9984),
                20: ("1g.10gb+me", 9984),
                15: ("1g.20gb", 20096),
                14: ("2g.20gb", 20096),
                9: ("3g.40gb", 40448),
                5: ("4g.40gb", 40448),
                0: ("7g.80gb", 81152),
            },
            _HOPPER_SMS,
            _HOPPER_ENGINES,
        ),
        power_limit_w=700,
        idle_power_w=70,
        max_sm_clock_mhz=1980,
        max_mem_clock_mhz=2619,
        sources="docs/reference/mig-facts.md 3.4 (S1, S8a, S8b, S2 R580), 4.1 (S8p)",
        confidence="ids, SMs, engines, placements, parent memory [V]; memory MiB [D] (R580 sizes)",
    )
)

_add(
    GpuModel(
        key="h100-nvl",
        name="NVIDIA H100 NVL",
        pci_device_id=0x232110DE,
        memory_total_mib=95830,
        architecture=ARCH_HOPPER,
        compute_capability=(9, 0),
        mig_capable=True,
        placement_units=8,
        compute_slices=7,
        profiles=_eight_slice(
            {
                19: ("1g.12gb", 11008),
                20: ("1g.12gb+me", 11008),
                15: ("1g.24gb", 22144),
                14: ("2g.24gb", 22144),
                9: ("3g.47gb", 47488),
                5: ("4g.47gb", 47488),
                0: ("7g.94gb", 95360),
            },
            _HOPPER_SMS,
            _HOPPER_ENGINES,
        ),
        power_limit_w=400,
        idle_power_w=60,
        max_sm_clock_mhz=1785,
        max_mem_clock_mhz=2619,
        sources="docs/reference/mig-facts.md 3.5 (S1, S8c driver 560.35.03), 4.1 (S8c)",
        confidence="ids, SMs, placements, parent memory, 1g/1g.24gb/3g memory [V]; other MiB [D]",
    )
)

_add(
    GpuModel(
        key="h200",
        name="NVIDIA H200",
        pci_device_id=0x233510DE,
        # 143771 MiB: nvmlDeviceGetMemoryInfo total on a real H200, driver
        # 580.159.04, 2026-12-04 [V] (docs/validation/nvidia-h200-2026-12-04.json).
        memory_total_mib=143771,
        architecture=ARCH_HOPPER,
        compute_capability=(9, 0),
        mig_capable=True,
        placement_units=8,
        compute_slices=7,
        profiles=_eight_slice(
            {
                19: ("1g.18gb", 16384),
                20: ("1g.18gb+me", 16384),
                15: ("1g.35gb", 33280),
                14: ("2g.35gb", 33280),
                9: ("3g.71gb", 71424),
                5: ("4g.71gb", 71424),
                0: ("7g.141gb", 143360),
            },
            _HOPPER_SMS,
            _HOPPER_ENGINES,
        ),
        power_limit_w=700,
        idle_power_w=75,
        max_sm_clock_mhz=1980,
        max_mem_clock_mhz=3201,
        sources="docs/reference/mig-facts.md 3.8 (every profile row, placements and parent memory "
        "from a real H200, driver 580.159.04, 2026-12-04: docs/validation/nvidia-h200-2026-12-04.json)",
        confidence="profiles, ids, SMs, engines, memory MiB, placements, parent memory [V] "
        "(driver 580.159.04, 2026-12-04)",
    )
)

_add(
    GpuModel(
        key="rtx-pro-6000",
        name="NVIDIA RTX PRO 6000 Blackwell Server Edition",
        pci_device_id=0x2BB510DE,
        memory_total_mib=97887,
        architecture=ARCH_BLACKWELL,
        compute_capability=(12, 0),
        mig_capable=True,
        placement_units=12,
        compute_slices=4,
        profiles=(
            ProfileFact(P_1_SLICE, 14, "1g.24gb", 1, 3, 4, 46, 1, 1, 1, 1, 0, 24192, (0, 3, 6, 9)),
            ProfileFact(
                P_1_SLICE_REV1, 21, "1g.24gb+me", 1, 3, 1, 46, 1, 1, 1, 1, 1, 24192, (0, 3, 6, 9)
            ),
            ProfileFact(
                P_1_SLICE_GFX, 47, "1g.24gb+gfx", 1, 3, 4, 46, 1, 1, 1, 1, 0, 24192, (0, 3, 6, 9)
            ),
            ProfileFact(
                P_1_SLICE_ALL_ME,
                65,
                "1g.24gb+me.all",
                1,
                3,
                1,
                46,
                1,
                4,
                4,
                4,
                1,
                24192,
                (0, 3, 6, 9),
            ),
            ProfileFact(
                P_1_SLICE_NO_ME, 67, "1g.24gb-me", 1, 3, 4, 46, 1, 0, 0, 0, 0, 24192, (0, 3, 6, 9)
            ),
            ProfileFact(P_2_SLICE, 5, "2g.48gb", 2, 6, 2, 94, 2, 2, 2, 2, 0, 48512, (0, 6)),
            ProfileFact(
                P_2_SLICE_GFX, 35, "2g.48gb+gfx", 2, 6, 2, 94, 2, 2, 2, 2, 0, 48512, (0, 6)
            ),
            ProfileFact(
                P_2_SLICE_ALL_ME, 64, "2g.48gb+me.all", 2, 6, 1, 94, 2, 4, 4, 4, 1, 48512, (0, 6)
            ),
            ProfileFact(
                P_2_SLICE_NO_ME, 66, "2g.48gb-me", 2, 6, 2, 94, 2, 0, 0, 0, 0, 48512, (0, 6)
            ),
            ProfileFact(P_4_SLICE, 0, "4g.96gb", 4, 12, 1, 188, 4, 4, 4, 4, 1, 97408, (0,)),
            ProfileFact(
                P_4_SLICE_GFX, 32, "4g.96gb+gfx", 4, 12, 1, 188, 4, 4, 4, 4, 1, 97408, (0,)
            ),
        ),
        power_limit_w=600,
        idle_power_w=50,
        max_sm_clock_mhz=2430,
        max_mem_clock_mhz=14001,
        sources="docs/reference/mig-facts.md 3.11 (S1, S8m), 4.3 (S8m)",
        confidence="ids, SMs, engines, placements, parent memory, 1g memory [V]; other MiB [D]",
    )
)

# A GPU without MIG, so the "MIG not supported" paths have a real subject.
_add(
    GpuModel(
        key="l4",
        name="NVIDIA L4",
        pci_device_id=0x27B810DE,
        memory_total_mib=23034,
        architecture=ARCH_ADA,
        compute_capability=(8, 9),
        mig_capable=False,
        placement_units=0,
        compute_slices=0,
        profiles=(),
        power_limit_w=72,
        idle_power_w=16,
        max_sm_clock_mhz=2040,
        max_mem_clock_mhz=6251,
        sources="not in docs/reference/mig-facts.md (no MIG); name, PCI id and memory [U]",
        confidence="[U]; present only to exercise the no-MIG paths",
    )
)


def get_model(key: str) -> GpuModel:
    """The catalog entry for ``key`` (e.g. ``h100-80gb``).

    Raises:
        KeyError: when the key is unknown; callers turn it into a UsageError.
    """
    return MODELS[key.lower()]


def model_for_pci_device_id(pci_device_id: int) -> GpuModel | None:
    """The catalog entry whose PCI device id matches, if any."""
    return next((m for m in MODELS.values() if m.pci_device_id == pci_device_id), None)


def ci_slice_options(gi_compute_slices: int) -> tuple[int, ...]:
    """Compute-instance sizes a GPU instance with ``gi_compute_slices`` offers.

    From the ``-lcip`` captures (docs/reference/mig-facts.md section 6): 1g {1}, 2g {1,2},
    3g {1,2,3}, 4g {1,2,4} (no 3c), 7g {1,2,3,4,7}. Larger or other sizes are
    [U] and follow the same rule: powers of two below the GI size, 3 when it
    fits a 3- or 7-slice GI, and the whole GI. Where each size may start
    inside the GPU instance (the compute-instance placement grid) is [U]:
    see :mod:`migperf.nvml.ci_profiles`.
    """
    g = gi_compute_slices
    opts = {c for c in (1, 2, 4) if c <= g}
    if g in (3, 7):
        opts.add(3)
    opts.add(g)
    return tuple(sorted(opts))


def ci_sm_count(gi_sm_count: int, gi_compute_slices: int, ci_compute_slices: int) -> int:
    """SMs of a compute instance: the whole GI's SMs, or a proportional share.

    A100 is linear (14 per slice) [V]; Hopper CI SM counts are unpublished, so
    a proportional share is used there [U].
    """
    if ci_compute_slices >= gi_compute_slices:
        return gi_sm_count
    return gi_sm_count * ci_compute_slices // gi_compute_slices
