"""One rank of the PyTorch data-parallel check: NCCL all-reduce and two DDP steps.

Started by :func:`migperf.compat.probes.torch_probe.check_data_parallel` with
``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``/``MASTER_PORT`` and its own device in
``CUDA_VISIBLE_DEVICES``. Prints one line on success; an error ends the process
with its traceback on stderr (the check reports its last lines).
"""

from __future__ import annotations

import os


def main() -> None:
    """Join the group, all-reduce, train two DDP steps, leave."""
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    rank = int(os.environ["RANK"])
    dist.init_process_group("nccl", rank=rank, world_size=int(os.environ["WORLD_SIZE"]))
    try:
        torch.cuda.set_device(0)
        t = torch.ones(4, device="cuda") * (rank + 1)
        dist.all_reduce(t)
        if float(t[0]) != 3.0:
            raise RuntimeError(f"all_reduce gave {float(t[0])}, expected 3.0")
        model = DistributedDataParallel(torch.nn.Linear(16, 4).cuda(), device_ids=[0])
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        for _ in range(2):
            opt.zero_grad()
            model(torch.randn(8, 16, device="cuda")).square().mean().backward()
            opt.step()
        torch.cuda.synchronize()
        print(f"rank {rank}: all_reduce ok, 2 DDP steps on {torch.cuda.get_device_name(0)}")
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
