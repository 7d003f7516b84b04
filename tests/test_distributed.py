"""Multi-process training logic: process-group backends, per-rank devices, the non-finite vote taken
before backward(), and CUDA RNG states restored on a machine with fewer GPUs.

The CPU parts run two real gloo processes under torchrun; the NCCL parts are ``gpu``-marked.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from fcn_deploy.errors import FCNError
from fcn_train.checkpointing import cuda_states_to_restore, saved_rng_for
from fcn_train.distributed import process_group_backend, rank_device

BIN = Path(sys.executable).parent
GPUS = torch.cuda.device_count() if torch.cuda.is_available() else 0

# Two ranks, each with a DDP-wrapped Linear; rank 1's loss is NaN when the argument says so.
WORKER = textwrap.dedent(
    """
    import os, sys
    import torch, torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel
    from fcn_train.distributed import init_distributed
    from fcn_train.loop import backward_step

    device = torch.device(sys.argv[1])
    d = init_distributed(device)
    if device.type == "cuda":
        device = torch.device("cuda", d.local_rank)
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2).to(device)
    ids = [device.index] if device.type == "cuda" else None
    net = DistributedDataParallel(model, device_ids=ids)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    results = []
    for step in range(3):
        loss = net(torch.full((2, 4), float(d.rank + 1), device=device)).sum()
        if sys.argv[2] == "nan" and d.rank == 1 and step == 1:
            loss = loss * float("nan")
        results.append(backward_step(loss, d, opt))
    # the ranks must still be in step: one more collective that every rank reaches
    total = d.sum(torch.tensor([1.0]).numpy())[0]
    weights = d.gather(model.weight.detach().cpu())
    same = all(torch.equal(weights[0], w) for w in weights)
    print(f"rank {d.rank} steps {results} ranks {total:g} same {same}", flush=True)
    d.barrier()
    d.close()
    """
)


def _torchrun(tmp_path: Path, device: str, mode: str) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    return subprocess.run(
        [str(BIN / "torchrun"), "--standalone", "--nproc_per_node", "2", str(script), device, mode],
        capture_output=True,
        text=True,
        timeout=180,  # a hang (the bug this guards against) fails the test instead of the suite
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


def test_process_group_backend() -> None:
    # NCCL serves only CUDA tensors; the trainer's votes and totals are CPU tensors
    assert process_group_backend(torch.device("cuda", 0)) == "cpu:gloo,cuda:nccl"
    assert process_group_backend(torch.device("cpu")) == "gloo"


def test_rank_device() -> None:
    cuda, cpu = torch.device("cuda", 0), torch.device("cpu")
    assert rank_device(cpu, 1, 2, 0) == cpu
    assert rank_device(cuda, 0, 1, 4) == cuda  # one process: the device asked for
    assert rank_device(cuda, 3, 4, 4) == torch.device("cuda", 3)
    with pytest.raises(FCNError, match="local rank 1 has no GPU of its own"):
        rank_device(cuda, 1, 2, 1)  # NCCL: one GPU per process


def test_cuda_rng_states_fit_the_gpus_present() -> None:
    saved = [torch.full((4,), i, dtype=torch.uint8) for i in range(8)]
    kept, dropped = cuda_states_to_restore(saved, 1)
    assert [int(s[0]) for s in kept] == [0] and dropped == 7
    kept, dropped = cuda_states_to_restore(saved[:2], 4)
    assert len(kept) == 2 and dropped == 0
    assert cuda_states_to_restore(saved, 0) == ([], 8)


def test_resume_at_another_world_size_reseeds_every_rank() -> None:
    saved = [{"rank": 0}, {"rank": 1}]
    assert saved_rng_for(saved, 1, 2) == {"rank": 1}  # same world size: each rank its own
    # 2 ranks saved, 4 resume (or 1 saved, 2 resume): no rank takes another's stream
    assert [saved_rng_for(saved, r, 4) for r in range(4)] == [None] * 4
    assert saved_rng_for(saved[:1], 1, 2) is None


@pytest.mark.slow
def test_nonfinite_loss_on_one_rank_stops_every_rank_before_backward(tmp_path: Path) -> None:
    result = _torchrun(tmp_path, "cpu", "nan")
    assert result.returncode == 0, result.stderr[-3000:]
    # the two ranks share one stdout pipe, so their lines can run together: find each one
    line = r"rank \d steps \[[^\]]*\] ranks \d+ same (?:True|False)"
    lines = sorted(re.findall(line, result.stdout))
    # both ranks skip step 1 together, take step 2 together, and end with equal weights
    assert lines == [
        "rank 0 steps [True, False, True] ranks 2 same True",
        "rank 1 steps [True, False, True] ranks 2 same True",
    ]


@pytest.mark.gpu
@pytest.mark.skipif(GPUS < 1, reason="needs a CUDA GPU")
def test_mixed_group_serves_cpu_and_cuda_tensors() -> None:
    """What a plain "nccl" group refuses: the trainer's CPU reductions, beside CUDA all-reduces."""
    import torch.distributed as dist

    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29561")
    dist.init_process_group(process_group_backend(torch.device("cuda", 0)), rank=0, world_size=1)
    try:
        cpu, gpu = torch.ones(3), torch.ones(3, device="cuda")
        dist.all_reduce(cpu)
        dist.all_reduce(gpu)
        out: list[object] = [None]
        dist.all_gather_object(out, {"rank": 0})
        assert cpu.device.type == "cpu" and gpu.is_cuda and out == [{"rank": 0}]
    finally:
        dist.destroy_process_group()


@pytest.mark.gpu
@pytest.mark.skipif(
    GPUS < 2,
    reason="DDP on NCCL needs two GPUs: NCCL refuses two ranks on one GPU (Duplicate GPU detected)",
)
def test_two_ranks_on_nccl(tmp_path: Path) -> None:
    result = _torchrun(tmp_path, "cuda", "nan")
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("steps [True, False, True] ranks 2 same True") == 2
