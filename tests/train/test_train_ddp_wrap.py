"""``wrap_ddp`` / ``flush_ddp`` on two gloo processes: sub-graph micro-steps under ``no_sync()`` give
every rank the averaged gradients, parameters no micro-step used keep ``grad=None``, and a step whose
last micro-step ran no backward (a skipped or unlabelled micro-batch) is flushed so the next step
neither fails nor inherits the old step's used parameters; the Trainer skips a step whose last
micro-step is non-finite on one rank and goes on, ranks identical."""

import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from hydranet.train import distributed


def rendezvous(results: str, name: str) -> str:  # a file, not a TCP port another test could take first
    return f"file://{Path(results).resolve()}/{name}.rendezvous"


def worker(rank: int, results: str) -> None:
    dist.init_process_group("gloo", init_method=rendezvous(results, "wrap"), rank=rank, world_size=2)
    torch.manual_seed(0)
    heads = nn.ModuleDict({t: nn.Linear(3, 2) for t in "abc"})
    ddp = distributed.wrap_ddp(heads)
    params = list(heads.parameters())
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(10 + rank))

    def loss(task: str) -> dict[str, torch.Tensor]:
        return {task: heads[task](x).pow(2).mean()}

    def local_grads(tasks: list[str]) -> dict[str, torch.Tensor]:  # autograd.grad: DDP's hooks do not fire
        return {t: torch.autograd.grad(loss(t)[t], heads[t].weight)[0] for t in tasks}

    def mean_over_ranks(g: torch.Tensor) -> torch.Tensor:
        return torch.stack(distributed.all_gather_tensor(g)).mean(0)

    out: dict[str, object] = {}
    ddp(loss, "a")  # a synchronised forward without backward (a non-finite skip) must not break the next step
    expected = {t: mean_over_ranks(g) for t, g in local_grads(["a", "b"]).items()}
    with ddp.no_sync():
        ddp(loss, "a")["a"].backward()
    ddp(loss, "b")["b"].backward()
    out["accumulated"] = all(torch.allclose(heads[t].weight.grad, expected[t], atol=1e-7) for t in "ab")
    out["unused_none"] = heads["c"].weight.grad is None
    heads.zero_grad(set_to_none=True)

    expected_a = mean_over_ranks(local_grads(["a"])["a"])
    with ddp.no_sync():
        ddp(loss, "a")["a"].backward()
    distributed.flush_ddp(ddp, params)
    out["flushed"] = torch.allclose(heads["a"].weight.grad, expected_a, atol=1e-7)
    out["flush_unused_none"] = heads["b"].weight.grad is None and heads["c"].weight.grad is None
    heads.zero_grad(set_to_none=True)
    ddp(loss, "b")["b"].backward()  # fails inside DDP if the flushed step's usage leaked into this one
    out["next_step_clean"] = heads["a"].weight.grad is None
    torch.save(out, f"{results}/rank{rank}.pt")
    distributed.shutdown()
    distributed.exit_process(0)  # gloo can SIGABRT at interpreter teardown; exit_process says why


def test_no_sync_accumulation_and_flush_on_two_ranks(tmp_path):
    mp.spawn(worker, args=(str(tmp_path),), nprocs=2, join=True)
    for rank in range(2):
        out = torch.load(tmp_path / f"rank{rank}.pt")
        assert out == {"accumulated": True, "unused_none": True, "flushed": True, "flush_unused_none": True,
                       "next_step_clean": True}, (rank, out)


def trainer_worker(rank: int, results: str) -> None:
    dist.init_process_group("gloo", init_method=rendezvous(results, "trainer"), rank=rank, world_size=2)
    sys.path.insert(0, str(Path(__file__).parent))
    from train_testkit import make_trainer

    torch.set_num_threads(1)
    trainer = make_trainer(Path(results) / "run", dist_info=distributed.DistInfo(rank=rank, world_size=2), steps=4,
                           batch_size=2, grad_accum=2, ckpt_every=0, scheduler={"kind": "temperature"})
    assert trainer.ddp is not None
    losses, calls = trainer.task_losses, []

    def nan_once(batch, tasks):  # rank 0's loss is NaN in the synchronised micro-step of step 2
        calls.append(1)
        out = losses(batch, tasks)
        return {t: v * float("nan") for t, v in out.items()} if rank == 0 and len(calls) == 4 else out

    trainer.task_losses = nan_once
    trainer.fit()
    flat = torch.cat([p.detach().flatten() for p in trainer.model.parameters()])
    same = all(torch.equal(flat, other) for other in distributed.all_gather_tensor(flat))
    torch.save({"steps": trainer.step, "skipped": trainer.skipped_steps, "same": same}, f"{results}/trainer{rank}.pt")
    distributed.shutdown()
    distributed.exit_process(0)


def test_trainer_skips_a_nonfinite_synchronised_micro_step_under_ddp(tmp_path):
    mp.spawn(trainer_worker, args=(str(tmp_path),), nprocs=2, join=True)
    for rank in range(2):
        assert torch.load(tmp_path / f"trainer{rank}.pt") == {"steps": 4, "skipped": 1, "same": True}
