"""The README is tested: every console example runs here against the simulator.

Each ``$ migperf ...`` line of the README's ``console`` blocks is in
:data:`EXAMPLES`, which says how it runs here:

* ``run``: as written (placeholders such as ``CONFIG`` or ``MIG-<uuid>`` filled
  in from a sandbox), and its exit code must be one the README promises;
* ``dry``: an experiment that takes minutes to hours; here ``--dry-run``
  checks its config and plans it on the simulated GPU it targets;
* ``gpu``: needs a real GPU; the README line must say so.

A README line missing from :data:`EXAMPLES` fails the first test, so a new
example is either runnable or marked. All examples run in README order in one
sandbox (a temporary folder with a copy of ``configs/`` and its own simulated
machine), like a newcomer following the README from the top.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
#: The simulated machine the sandbox's plain commands see (the fallback when no driver exists).
MACHINE = "a100-40gb"


@dataclass(frozen=True)
class Example:
    kind: str = "run"  # run | dry | gpu
    codes: tuple[int, ...] = (0,)
    timeout: float = 120.0
    extra: tuple[str, ...] = field(default=())


EXAMPLES: dict[str, Example] = {
    "migperf gpus": Example(),
    "migperf mig profiles --gpu 0": Example(),
    "migperf mig show": Example(),
    "migperf --simulate h100-80gb:8 mig profiles --json": Example(),
    "migperf run configs/quickstart.yaml": Example("dry"),
    "migperf run configs/study-inference-per-profile.yaml --resume": Example("dry"),
    "migperf run CONFIG --rerun": Example(),
    "migperf run CONFIG --dry-run": Example(),
    "migperf config check CONFIG": Example(),
    "migperf config schema": Example(),
    "migperf results list | show | export out.csv": Example(),
    "migperf report": Example(),
    "migperf compare old.db new.db": Example(codes=(0, 1)),
    "migperf plan demand.yaml": Example(codes=(0, 1)),
    "migperf run configs/quickstart-sharing.yaml": Example("dry"),
    "migperf results show": Example(),
    "migperf run configs/mig-vs-mps-a30.yaml": Example("dry"),
    "migperf report --results nightly.db --out site/ --filter workload=resnet50 --filter profile=1g.10gb --filter profile=3g.40gb": Example(),
    "migperf compare last-night.db tonight.db": Example(codes=(0, 1)),
    "migperf compare 1a2b3c 9f8e7d --results results/migperf.db": Example(codes=(0, 1)),
    "migperf compare last-night.db tonight.db --threshold 0.05 --alpha 0.05 --json": Example(codes=(0, 1)),
    "migperf run configs/nightly.yaml --results tonight.db": Example("dry"),
    'migperf compare baseline.db tonight.db || { echo "performance regression"; exit 1; }': Example(codes=(0, 1)),
    "migperf plan configs/demand-example.yaml --results results/migperf.db --out mig-plan.yaml": Example(codes=(0, 1)),
    "migperf plan configs/demand-mps-example.yaml --capacities configs/capacities-raw-example.csv": Example(),
    "migperf mig apply --config mig-plan.yaml": Example("gpu"),
    "migperf plan demand.yaml --write-config measure.yaml": Example(codes=(0, 1)),
    "migperf run measure.yaml": Example("gpu"),
    "migperf --simulate a100-80gb:2 plan demand.yaml --verify --verify-duration 10": Example(codes=(0, 1)),
    'migperf mig check "4g.40gb,3g.40gb" --model h100-80gb': Example(),
    "migperf mig layouts --model a100-80gb": Example(),
    'migperf mig apply "1g.5gb,1g.5gb,2g.10gb,3g.20gb" --gpu 0': Example(),
    "migperf mig apply -f mig-parted.yaml -c all-balanced": Example(),
    "migperf mig export > current.yaml": Example(),
    "migperf mig reset --gpu 0 --dry-run": Example(),
    "migperf mig enable --gpu 0": Example(),
    "migperf mig restore": Example(),
    "migperf mig restore --gpu 0 --discard": Example(),
    "migperf bench infer --model resnet50 --batch-size 1,8,32 --precision fp16 --device MIG-<uuid>": Example("gpu"),
    "migperf bench train --model bert-base --seq-len 128 --batch-size 8 --device 0 --repeats 3": Example("gpu"),
    # A time budget: a 256-wide product, one second at most (the README's runs minutes on a CPU).
    "migperf bench infer --model gemm --device 0 --json": Example(
        extra=("--model-arg", "n=256", "--min-duration", "0.2", "--max-duration", "1")
    ),
    "migperf bench infer --model resnet50 --device MIG-<uuid> --scenario server --qps 200 --slo-ms 50": Example("gpu"),
    "migperf bench infer --model resnet50 --device MIG-<uuid> --scenario server --find-max-qps --slo-ms 50 -b 8": Example("gpu"),
    "migperf bench infer --model bert-base --scenario closed-loop --concurrency 16 -b 16": Example("gpu"),
    # A time budget: PyTorch alone (the full matrix is in tests/compat).
    "migperf compat": Example(extra=("-F", "pytorch", "--no-store"), timeout=180),
    "migperf compat --device MIG-<uuid> -F pytorch,jax --json": Example("gpu"),
    "migperf --simulate a100-40gb compat -F pytorch,onnxruntime,jax,tensorflow,http-torchscript --no-store": Example(
        timeout=180
    ),
    'migperf --simulate a100-80gb mig apply "3g.40gb,2g.20gb,1g.10gb*2"': Example(),
    "migperf --simulate a100-80gb sim exec -- nvitop --once": Example(),
    "migperf --simulate h100-80gb:2 sim exec -- gpustat --json": Example(),
    "migperf --simulate a100-80gb:2 sim exec -- python my_monitor.py": Example(),
}

#: The README's own monitoring program for `sim exec -- python my_monitor.py`.
MY_MONITOR = """\
import pynvml

pynvml.nvmlInit()
for i in range(pynvml.nvmlDeviceGetCount()):
    h = pynvml.nvmlDeviceGetHandleByIndex(i)
    print(i, pynvml.nvmlDeviceGetName(h), pynvml.nvmlDeviceGetMemoryInfo(h).total // 2**20, "MiB")
pynvml.nvmlShutdown()
"""


def readme_examples() -> list[tuple[int, str, str]]:
    """``(line number, command, comment)`` for each ``$`` line of the README's console blocks."""
    out = []
    in_console = False
    for n, line in enumerate(README.read_text().splitlines(), 1):
        if line.startswith("```"):
            in_console = line.strip() == "```console" and not in_console
            continue
        if in_console and line.startswith("$ "):
            text = line[2:]
            command, _, comment = _split_comment(text)
            out.append((n, command.strip(), comment.strip()))
    return out


def _split_comment(text: str) -> tuple[str, str, str]:
    """Split ``cmd  # comment`` at a ``#`` outside quotes that starts a comment."""
    quote = None
    for i, ch in enumerate(text):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or text[i - 1] == " "):
            return text[:i], "#", text[i + 1 :]
    return text, "", ""


def test_every_readme_example_is_run_or_marked() -> None:
    found = readme_examples()
    assert len(found) >= 40, "the README lost its examples?"
    missing = [f"README.md:{n}: {cmd}" for n, cmd, _ in found if cmd not in EXAMPLES]
    assert not missing, "README examples this test does not know (add them to EXAMPLES):\n" + "\n".join(missing)
    unmarked = [
        f"README.md:{n}: {cmd}"
        for n, cmd, comment in found
        if EXAMPLES[cmd].kind == "gpu" and "GPU" not in comment
    ]
    assert not unmarked, "examples that need a GPU must say so in their comment:\n" + "\n".join(unmarked)
    stale = set(EXAMPLES) - {cmd for _, cmd, _ in found}
    assert not stale, f"EXAMPLES lists commands the README no longer has: {sorted(stale)}"


TINY = """\
name: readme-{tag}
gpus: [0]
layouts: ["1g.5gb", "3g.20gb"]
stop: {{min_iterations: 3, min_duration_s: 0.2, max_duration_s: 2}}
jobs:
  - workload: gemm
    model_args: {{n: 64}}
    batch_size: {batch}
"""

NIGHTLY_TINY = """\
name: nightly-tiny
gpus: [0]
layouts: ["1g.10gb", "3g.40gb"]
stop: {min_iterations: 3, min_duration_s: 0.2, max_duration_s: 2}
jobs:
  - workload: resnet50
    model_args: {image_size: 32}
    batch_size: 1
"""

MIG_PARTED = """\
version: v1
mig-configs:
  all-balanced:
    - devices: all
      mig-enabled: true
      mig-devices:
        "1g.5gb": 2
        "2g.10gb": 1
        "3g.20gb": 1
"""


class Sandbox:
    """A folder like a fresh clone's, its own simulated machine, and the README's files."""

    def __init__(self, root: Path) -> None:
        self.root = root
        shutil.copytree(ROOT / "configs", root / "configs")
        (root / "readme-a.yaml").write_text(TINY.format(tag="a", batch=1))
        (root / "readme-b.yaml").write_text(TINY.format(tag="b", batch=2))
        (root / "mig-parted.yaml").write_text(MIG_PARTED)
        (root / "my_monitor.py").write_text(MY_MONITOR)
        shutil.copy(ROOT / "configs" / "demand-example.yaml", root / "demand.yaml")
        self.env = {
            **os.environ,
            "MIGPERF_STATE_DIR": str(root / "state"),
            "MIGPERF_SIMULATE": MACHINE,
            "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
        }
        self.env.pop("MIGPERF_READ_ONLY", None)
        self.env.pop("MIGPERF_SIM_FAULTS", None)
        for cfg in ("readme-a.yaml", "readme-b.yaml"):
            self.migperf(["run", cfg], timeout=300, check=True)
        # What the README's nightly example filters on: resnet50 on 1g.10gb and
        # 3g.40gb of an A100-80GB (tiny images, short windows).
        (root / "nightly-tiny.yaml").write_text(NIGHTLY_TINY)
        self.migperf(["--simulate", "a100-80gb", "run", "nightly-tiny.yaml", "--results", "nightly.db"], timeout=300, check=True)
        store = root / "results" / "migperf.db"
        for name in ("old.db", "new.db", "last-night.db", "tonight.db", "baseline.db"):
            shutil.copy(store, root / name)
        out = self.migperf(["results", "list", "--json"], check=True).stdout
        self.hashes = sorted({str(row["config_hash"]) for row in json.loads(out)})

    def migperf(
        self, argv: list[str], *, timeout: float = 120.0, check: bool = False, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [sys.executable, "-m", "migperf", *argv],
            cwd=self.root,
            env=env or self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"migperf {' '.join(argv)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
        return proc

    def mig_uuid(self) -> str:
        doc = json.loads(self.migperf(["mig", "show", "--json"], check=True).stdout)
        for gpu in doc:
            for gi in gpu.get("instances", []):
                for ci in gi.get("compute_instances", []):
                    if ci.get("mig_uuid"):
                        return str(ci["mig_uuid"])
        self.migperf(["mig", "apply", "1g.5gb"], check=True)
        return self.mig_uuid()

    def argv(self, command: str) -> list[list[str]]:
        """The migperf argument lists one README line stands for, placeholders filled in."""
        command = command.split("||")[0].strip()
        if "MIG-<uuid>" in command:
            command = command.replace("MIG-<uuid>", self.mig_uuid())
        command = command.replace("CONFIG", "readme-a.yaml")
        if len(self.hashes) >= 2:
            command = command.replace("1a2b3c", self.hashes[0][:6]).replace("9f8e7d", self.hashes[1][:6])
        words = shlex.split(command)
        assert words[0] == "migperf"
        if "|" in words:  # "results list | show | export out.csv": three commands
            i = words.index("|")
            head, rest = words[1:i], " ".join(words[i + 1 :]).split(" | ")
            return [head, *[[head[0], *shlex.split(r)] for r in rest]]
        return [words[1:]]


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Sandbox:
    return Sandbox(tmp_path_factory.mktemp("readme"))


RUNNABLE = [(n, cmd) for n, cmd, _ in readme_examples() if EXAMPLES.get(cmd, Example("gpu")).kind != "gpu"]


@pytest.mark.parametrize(("line", "command"), RUNNABLE, ids=[f"L{n}" for n, _ in RUNNABLE])
def test_readme_example_runs(sandbox: Sandbox, line: int, command: str) -> None:
    example = EXAMPLES[command]
    for argv in sandbox.argv(command):
        env = None
        if example.kind == "dry":
            argv = [*argv, "--dry-run"]
            # Without a driver, the config's own GPU model is simulated (the
            # one fallback rule); --dry-run changes nothing even on a GPU.
            if shutil.which("nvidia-smi") is None:
                env = {k: v for k, v in sandbox.env.items() if k != "MIGPERF_SIMULATE"}
        redirect = None
        if ">" in argv:
            i = argv.index(">")
            argv, redirect = argv[:i], argv[i + 1]
        proc = sandbox.migperf([*argv, *example.extra], timeout=example.timeout, env=env)
        assert proc.returncode in example.codes, (
            f"README.md:{line}: `migperf {' '.join(argv)}` exited {proc.returncode}:\n"
            f"{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
        )
        assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
        if redirect:
            (sandbox.root / redirect).write_text(proc.stdout)
        if re.search(r"--json\b", " ".join(argv)) and proc.returncode == 0:
            json.loads(proc.stdout)  # strict JSON, nothing else on stdout
