"""Issue 12 — how much of the machine a training step uses.

For a model preset, one training step (forward of all seven heads on ``--batch-size`` samples of
the 8-camera rig, a proxy loss = mean of every output, backward, AdamW step) is timed in four
variants: fp32 / bf16 autocast × NCHW / channels_last weights. FLOPs of the step are counted once
with ``torch.utils.flop_counter.FlopCounterMode`` (forward + backward; convolutions and matmuls,
the ops that dominate) and divided by the step time: achieved GFLOP/s. Beside it, the machine's
peak is *measured*, not quoted: the best GFLOP/s of large square matmuls in each precision with the
same thread count. ``pct_of_peak`` = achieved / peak of the precision the variant computes in.

Goal P0 (issue 12): a training step of the ``base`` preset at >= 40 % of the peak of the precision
it uses. Timing takes the fastest of ``--repeats`` steps after warm-up (the machine is shared; the
minimum is the least disturbed estimate); FLOPs do not depend on load.

``--ab-steps N`` adds the accuracy side: the same two rendered world frames learnt by the same small
model for N steps (objects3d + detection2d) in fp32 and under bf16 autocast (channels_last both),
and the metrics of both: bf16 must not change what is learnt at equal steps.

    .venv/bin/python benchmarks/throughput.py --preset tiny --ab-steps 150
    .venv/bin/python benchmarks/throughput.py --preset base --batch-size 1 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from hydranet.model import ModelConfig, create_model
from hydranet.model.config import ALL_TASKS
from hydranet.setup import default_rig
from hydranet.train.precision import cpu_flags, device_has_fast_bf16


def matmul_peak_gflops(dtype: torch.dtype, n: int, repeats: int) -> float:
    """Best GFLOP/s of an ``n × n`` matmul in ``dtype`` (2 n^3 FLOPs each)."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=g).to(dtype)
    b = torch.randn(n, n, generator=g).to(dtype)
    torch.mm(a, b)  # warm-up: oneDNN/MKL kernel selection
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best / 1e9


def make_inputs(cfg: ModelConfig, batch_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    h, w = cfg.setup.image_size
    rig = default_rig((h, w))
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (batch_size, len(rig), 3, h, w), dtype=torch.uint8, generator=g)
    K = rig.intrinsics()[None].expand(batch_size, -1, -1, -1).contiguous()
    T = rig.extrinsics()[None].expand(batch_size, -1, -1, -1).contiguous()
    return images, K, T


def step_fn(model: torch.nn.Module, inputs: tuple[torch.Tensor, ...], bf16: bool) -> Any:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = model(*inputs)
        loss = sum(v.float().mean() for d in out.values() for v in d.values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def count_flops(model: torch.nn.Module, inputs: tuple[torch.Tensor, ...]) -> int:
    step = step_fn(model, inputs, bf16=False)
    with FlopCounterMode(display=False) as counter:
        step()
    return int(counter.get_total_flops())


def time_step(step: Any, repeats: int) -> float:
    step()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        best = min(best, time.perf_counter() - t0)
    return best


def precision_ab(steps: int) -> dict[str, Any]:
    """Learn two world frames (two cameras, 64×128) in fp32 and in bf16 autocast; metrics of both."""
    from hydranet.data.sample import collate
    from hydranet.setup import Rig, Setup
    from hydranet.world import SyntheticWorld
    from hydranet.world.config import WorldConfig

    setup = Setup(image_size=(64, 128), grid={"x_range": (-32.0, 32.0), "y_range": (-32.0, 32.0), "cell": 1.0},
                  rigs={"two": Rig(cameras=default_rig((64, 128)).cameras[:2])})
    world = SyntheticWorld(WorldConfig(seed=13, num_scenes=2, frames_per_scene=1, setup=setup, traffic_density=2.0,
                                       layout="intersection"))
    batch = collate([world[i] for i in range(len(world))])
    names = ["detection2d", "objects3d"]
    out: dict[str, Any] = {"steps": steps, "frames": len(batch)}
    for precision in ("fp32", "bf16"):
        torch.manual_seed(0)
        cfg = ModelConfig.preset("tiny", setup=setup, neck={"channels": 16},
                                 fusion={"channels": 16, "levels": ["p2", "p3"]}, bev_channels=16,
                                 tasks={"detection2d": {"stride": 4}, "objects3d": {}})
        model = create_model(cfg).to(memory_format=torch.channels_last).train()
        opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
        t0 = time.process_time()
        for _ in range(steps):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
                pred = model(batch.images, batch.intrinsics, batch.T_ego_from_cam, tasks=names)
            loss = sum(model.task_objects[n].loss(pred[n], batch)["loss"].float() for n in names)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        cpu_s = time.process_time() - t0
        model.eval()
        with torch.no_grad():
            pred = model(batch.images, batch.intrinsics, batch.T_ego_from_cam, tasks=names)
        metrics = {}
        for n in names:
            m = model.task_objects[n].make_metric()
            m.update(model.task_objects[n].decode(pred[n], batch), model.task_objects[n].targets(batch))
            metrics[n] = round(float(m.compute()["map"]), 4)
        out[precision] = {"final_loss": round(float(loss), 4), "map": metrics, "cpu_s": round(cpu_s, 1)}
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    overrides: dict[str, Any] = {"tasks": {t: {} for t in ALL_TASKS}}
    if args.image_size:
        overrides["setup"] = {"image_size": tuple(args.image_size)}
    cfg = ModelConfig.preset(args.preset, **overrides)
    inputs = make_inputs(cfg, args.batch_size)
    torch.manual_seed(0)
    model = create_model(cfg).train()
    flops = count_flops(model, inputs)
    peak = {"fp32": matmul_peak_gflops(torch.float32, args.matmul_n, args.repeats * 2),
            "bf16": matmul_peak_gflops(torch.bfloat16, args.matmul_n, args.repeats * 2)}
    variants = []
    for precision in ("fp32", "bf16"):
        for layout in ("nchw", "channels_last"):
            torch.manual_seed(0)
            m = create_model(cfg).train()
            if layout == "channels_last":
                m = m.to(memory_format=torch.channels_last)
            s = time_step(step_fn(m, inputs, precision == "bf16"), args.repeats)
            gflops = flops / s / 1e9
            variants.append({"precision": precision, "layout": layout, "step_s": round(s, 4),
                             "samples_per_s": round(args.batch_size / s, 3), "gflop_per_s": round(gflops, 1),
                             "pct_of_peak": round(100 * gflops / peak[precision], 1)})
    ab = precision_ab(args.ab_steps) if args.ab_steps else None
    default = next(v for v in variants if v["layout"] == "channels_last" and
                   v["precision"] == ("bf16" if device_has_fast_bf16(torch.device("cpu")) else "fp32"))
    return {"benchmark": "throughput", "preset": args.preset, "image_size": list(cfg.setup.image_size),
            "cameras": len(cfg.setup.rig()), "batch_size": args.batch_size, "threads": args.threads,
            "torch": torch.__version__, "cpu_bf16_flags": sorted(f for f in cpu_flags() if "bf16" in f or "amx" in f),
            "step_gflop": round(flops / 1e9, 2), "matmul_peak_gflop_per_s": {k: round(v, 1) for k, v in peak.items()},
            "matmul_n": args.matmul_n, "variants": variants,
            "train_precision_auto": default["precision"],
            "precision_ab": ab,
            # P0 is set for the `base` preset; other presets report the figure without a verdict.
            "goal_p0": {"goal": ">= 40 % of the peak of the precision used (train.precision auto, channels_last), "
                                "on the base preset",
                        "pct_of_peak": default["pct_of_peak"],
                        "met": default["pct_of_peak"] >= 40.0 if args.preset == "base" else None}}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="base", help="model preset (tiny, base)")
    p.add_argument("--image-size", type=int, nargs=2, default=None, metavar=("H", "W"))
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3, help="timed steps per variant (the fastest is kept)")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--matmul-n", type=int, default=2048, help="matrix size of the peak measurement")
    p.add_argument("--ab-steps", type=int, default=0, help="also learn 2 frames N steps in fp32 and bf16 (0: skip)")
    args = p.parse_args(argv)
    if args.batch_size < 1 or args.repeats < 1 or args.threads < 1 or args.ab_steps < 0:
        p.error("--batch-size, --repeats and --threads must be >= 1")
    print(json.dumps(run(args), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
