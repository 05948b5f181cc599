"""What each simulated board answers to NVML's static queries: identity, limits, links.

One :class:`BoardFacts` per catalog model (:data:`migperf.nvml.catalog.MODELS`).
The H200 row is the real driver's answers, recorded on an NVIDIA H200 with
driver 580.159.04 on 2026-12-04 (``docs/validation/nvidia-h200-2026-12-04.json``,
key ``nvml_surface``) [V]. That machine was a virtual machine with the GPU
passed through (virtualization mode 1, PCI bus 00:06.0) and its NVLinks not
exposed (every link ``NotSupported``); the simulated H200 is that machine.

The other rows are datasheet values or plausible ones, each marked in
``confidence`` as docs/reference/mig-facts.md marks facts (``V`` verified,
``D`` derived, ``U`` uncertain). Identity strings (board part number, VBIOS,
InfoROM) of the other models are synthetic [U]: they have the real format and
say nothing true about a particular board. docs/reference/nvml-surface.md
lists the sources.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BoardFacts:
    """One model's answers to NVML's static queries (units as NVML returns them)."""

    brand: int  # nvmlBrandType_t; 14 = NVML_BRAND_NVIDIA on R580 datacenter boards
    board_part_number: str
    vbios_version: str
    inforom_image_version: str
    virtualization_mode: int  # 0 none (bare metal), 1 pass-through
    power_min_w: int
    power_max_w: int
    #: nvmlDeviceGetTemperatureThreshold: shutdown, slowdown, memory max, GPU max (degrees C).
    temperature_thresholds: tuple[int, int, int, int]
    pcie_generation: int
    pcie_width: int
    gpu_cores: int
    memory_bus_width: int
    bar1_mib: int
    #: NVLinks the driver reports active; 0: every link query is NOT_SUPPORTED.
    nvlinks: int
    #: nvmlDeviceGetNvLinkVersion's answer for an active link.
    nvlink_version: int
    #: Max rows of the row remapper histogram; 0: no row remapping (NOT_SUPPORTED).
    remapper_rows: int
    idle_sm_clock_mhz: int
    confidence: str


#: The 6 HBM3e stacks of an H200 report 3072 remappable rows [V]; other HBM
#: boards get 512 per stack [D from that, U].
_ROWS_PER_STACK = 512

BOARDS: dict[str, BoardFacts] = {
    "h200": BoardFacts(
        brand=14,
        board_part_number="692-2G520-0282-001",
        vbios_version="96.00.A5.00.1A",
        inforom_image_version="G520.0282.02.02",
        virtualization_mode=1,
        power_min_w=200,
        power_max_w=700,
        temperature_thresholds=(95, 89, 95, 87),
        pcie_generation=5,
        pcie_width=16,
        gpu_cores=16896,
        memory_bus_width=6016,
        bar1_mib=262144,
        nvlinks=0,
        nvlink_version=0,
        remapper_rows=3072,
        idle_sm_clock_mhz=345,
        confidence="V: every field, from the 2026-12-04 record (driver 580.159.04)",
    ),
    "h100-80gb": BoardFacts(
        brand=14,
        board_part_number="692-2G520-0200-000",
        vbios_version="96.00.74.00.0E",
        inforom_image_version="G520.0200.00.05",
        virtualization_mode=0,
        power_min_w=200,
        power_max_w=700,
        temperature_thresholds=(92, 89, 95, 87),
        pcie_generation=5,
        pcie_width=16,
        gpu_cores=16896,
        memory_bus_width=5120,
        bar1_mib=131072,
        nvlinks=18,
        nvlink_version=6,  # NVML_NVLINK_VERSION_4_0
        remapper_rows=5 * _ROWS_PER_STACK,
        idle_sm_clock_mhz=345,
        confidence="cores, bus width, PCIe, power max, links [V datasheet]; the rest [U]",
    ),
    "h100-nvl": BoardFacts(
        brand=14,
        board_part_number="900-21010-0020-000",
        vbios_version="96.00.74.00.1A",
        inforom_image_version="G520.0240.00.01",
        virtualization_mode=0,
        power_min_w=200,
        power_max_w=400,
        temperature_thresholds=(92, 89, 95, 87),
        pcie_generation=5,
        pcie_width=16,
        gpu_cores=16896,
        memory_bus_width=6144,
        bar1_mib=131072,
        nvlinks=0,  # a bridge is optional: prefer the error a bridgeless board gives [U]
        nvlink_version=0,
        remapper_rows=6 * _ROWS_PER_STACK,
        idle_sm_clock_mhz=345,
        confidence="cores, bus width, PCIe, power max [V datasheet]; the rest [U]",
    ),
    "a100-40gb": BoardFacts(
        brand=14,
        board_part_number="692-2G506-0200-002",
        vbios_version="92.00.19.00.10",
        inforom_image_version="G506.0200.00.04",
        virtualization_mode=0,
        power_min_w=100,
        power_max_w=400,
        temperature_thresholds=(92, 89, 95, 85),
        pcie_generation=4,
        pcie_width=16,
        gpu_cores=6912,
        memory_bus_width=5120,
        bar1_mib=65536,
        nvlinks=12,
        nvlink_version=4,  # NVML_NVLINK_VERSION_3_0
        remapper_rows=5 * _ROWS_PER_STACK,
        idle_sm_clock_mhz=210,
        confidence="cores, bus width, PCIe, power max, links [V datasheet]; the rest [U]",
    ),
    "a100-80gb": BoardFacts(
        brand=14,
        board_part_number="692-2G506-0210-002",
        vbios_version="92.00.36.00.02",
        inforom_image_version="G506.0210.00.04",
        virtualization_mode=0,
        power_min_w=100,
        power_max_w=400,
        temperature_thresholds=(92, 89, 95, 85),
        pcie_generation=4,
        pcie_width=16,
        gpu_cores=6912,
        memory_bus_width=5120,
        bar1_mib=131072,
        nvlinks=12,
        nvlink_version=4,  # NVML_NVLINK_VERSION_3_0
        remapper_rows=5 * _ROWS_PER_STACK,
        idle_sm_clock_mhz=210,
        confidence="cores, bus width, PCIe, power max, links [V datasheet]; the rest [U]",
    ),
    "a30": BoardFacts(
        brand=14,
        board_part_number="900-21001-0040-100",
        vbios_version="92.00.66.00.01",
        inforom_image_version="G202.0200.00.01",
        virtualization_mode=0,
        power_min_w=100,
        power_max_w=165,
        temperature_thresholds=(92, 89, 95, 85),
        pcie_generation=4,
        pcie_width=16,
        gpu_cores=3584,
        memory_bus_width=3072,
        bar1_mib=32768,
        nvlinks=0,  # a bridge is optional [U]
        nvlink_version=0,
        remapper_rows=4 * _ROWS_PER_STACK,
        idle_sm_clock_mhz=210,
        confidence="cores, bus width, PCIe, power max [V datasheet]; the rest [U]",
    ),
    "rtx-pro-6000": BoardFacts(
        brand=14,
        board_part_number="900-2G153-0000-000",
        vbios_version="98.02.55.00.00",
        inforom_image_version="G153.0200.00.01",
        virtualization_mode=0,
        power_min_w=300,
        power_max_w=600,
        temperature_thresholds=(98, 95, 0, 90),
        pcie_generation=5,
        pcie_width=16,
        gpu_cores=24064,
        memory_bus_width=512,
        bar1_mib=131072,
        nvlinks=0,
        nvlink_version=0,
        remapper_rows=0,  # GDDR7: no row remapper [U]
        idle_sm_clock_mhz=180,
        confidence="cores, bus width, PCIe, power max [V datasheet]; the rest [U]",
    ),
    "l4": BoardFacts(
        brand=14,
        board_part_number="900-2G193-0000-001",
        vbios_version="95.04.29.00.06",
        inforom_image_version="G193.0200.00.01",
        virtualization_mode=0,
        power_min_w=40,
        power_max_w=72,
        temperature_thresholds=(98, 95, 0, 90),
        pcie_generation=4,
        pcie_width=16,
        gpu_cores=7424,
        memory_bus_width=192,
        bar1_mib=32768,
        nvlinks=0,
        nvlink_version=0,
        remapper_rows=0,  # GDDR6: no row remapper [U]
        idle_sm_clock_mhz=210,
        confidence="cores, bus width, PCIe, power max [V datasheet]; the rest [U]",
    ),
}


def board(model_key: str) -> BoardFacts:
    """The board facts of a catalog model.

    Raises:
        KeyError: the model has no board facts (a catalog entry added without them).
    """
    return BOARDS[model_key]
