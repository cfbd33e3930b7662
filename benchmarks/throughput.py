"""How much of the machine a training step uses, measured against peaks taken in the same run.

The step is the real one: ``Trainer.train_step`` of the training config (``--config``, default
``configs/demo.yaml``; ``--preset`` swaps in a model preset with its own image size) on a fixed batch of
rendered world frames of the model's rig -- every task's real loss, the configured loss balancing,
gradient clipping and the config's optimizer step (``train.optimizer``). It is timed in four variants,
fp32 / bf16 autocast × NCHW / channels_last weights, with the config's thread count (``--threads`` overrides it).

For each variant the JSON gives the step's FLOPs (``torch.utils.flop_counter.FlopCounterMode``:
convolutions and matmuls), split into the network's forward and backward (``model_gflop``) and the optimizer's
own products (``optimizer_gflop``: Muon's Newton–Schulz iterations; AdamW's arithmetic is elementwise and counts
0), the fastest of ``--repeats`` timed steps, the achieved GFLOP/s and the percentage of both peaks of the
variant's precision -- both of the network's FLOPs alone, so an optimizer that adds products cannot raise them
-- and where the step's time goes: the ops of one profiled step (``torch.profiler``) grouped by name, largest
self time first.

The peaks are measured, not quoted, with the same threads, as the best over sizes:

- matmul: ``n × n @ n × n`` for n in 256 .. 4096 (``--matmul-sizes``), fp32 and bf16;
- convolution: a 3×3, stride-1, channels_last convolution of a ``[8, C, 64, 64]`` batch for C in
  64 .. 256 (``--conv-channels``), fp32 and bf16.

A peak taken at one size, or on a busy machine, is several times too low: run it on an idle machine
(``machine.loadavg`` in the JSON says how busy it was) and quote ratios from one run only.

``--compare "LABEL: KEY=VALUE KEY=VALUE"`` (repeatable) also times the config's own variant (its precision
and layout) against the same step with those overrides -- trunk widths, a head's channels -- on the same batch,
interleaved: ``--rounds`` rounds, each timing every variant ``--repeats`` times (in alternating order), so a
machine that slows down slows every variant alike. Settings every timed step shares (``train.batch_size``,
``train.threads``, ``train.precision``, ``train.channels_last``, ...) are refused there. ``compared`` gives each
variant's network GFLOP, its fastest step, its ratio to the config's step and its share of the matmul peak.

    .venv/bin/python benchmarks/throughput.py > runs/throughput_demo.json
    .venv/bin/python benchmarks/throughput.py --preset base --batch-size 1 --repeats 3
    .venv/bin/python benchmarks/throughput.py --threads 1 --rounds 3 \\
        --compare "stage1_32: model.trunk.stem_width=32 model.trunk.widths=[32,48,96,192]"
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

from hydranet.data.sample import collate
from hydranet.model import ModelConfig, create_model
from hydranet.train.config import (
    Config,
    ConfigError,
    config_from_dict,
    config_to_dict,
    config_with_overrides,
    load_config,
)
from hydranet.train.demo import default_demo_config
from hydranet.train.machine import cpu_model
from hydranet.train.precision import cpu_flags, device_has_fast_bf16
from hydranet.train.trainer import Trainer
from hydranet.world import SyntheticWorld
from hydranet.world.config import WorldConfig

GOAL_PCT = 30.0  # issue 20: the demo's training step at >= 30 % of the bf16 matmul peak


def best_of(fn: Callable[[], Any], repeats: int) -> float:
    """Fastest wall time (s) of ``repeats`` calls of ``fn`` after one warm-up call."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def matmul_peaks(dtype: torch.dtype, sizes: list[int], repeats: int) -> dict[str, float]:
    """GFLOP/s of an ``n × n`` matmul in ``dtype`` (2 n³ FLOPs) per size n."""
    out = {}
    g = torch.Generator().manual_seed(0)
    for n in sizes:
        a = torch.randn(n, n, generator=g).to(dtype)
        b = torch.randn(n, n, generator=g).to(dtype)
        out[str(n)] = round(2 * n**3 / best_of(lambda a=a, b=b: torch.mm(a, b), repeats) / 1e9, 1)
    return out


def conv_peaks(dtype: torch.dtype, channels: list[int], repeats: int) -> dict[str, float]:
    """GFLOP/s of a 3×3 stride-1 channels_last convolution ``[8, C, 64, 64] -> [8, C, 64, 64]`` per C."""
    out = {}
    for c in channels:
        conv = torch.nn.Conv2d(c, c, 3, padding=1, bias=False).to(dtype).to(memory_format=torch.channels_last)
        x = torch.randn(8, c, 64, 64).to(dtype).contiguous(memory_format=torch.channels_last)
        flops = 2 * 8 * 64 * 64 * c * c * 9
        with torch.no_grad():
            out[str(c)] = round(flops / best_of(lambda conv=conv, x=x: conv(x), repeats) / 1e9, 1)
    return out


def step_config(args: argparse.Namespace) -> Config:
    """The training config whose step is measured: ``--config`` with ``--set`` overrides; with ``--preset`` its
    model is swapped for the preset (all seven tasks, the preset's image size) before the overrides apply, so
    ``--set model.…`` (and a ``--compare`` variant's) edits the preset."""
    path = args.config or default_demo_config()
    if not args.preset:
        return load_config(path, args.set)
    tree = config_to_dict(load_config(path))
    tree["model"] = ModelConfig.preset(args.preset).model_dump(mode="json")
    return config_with_overrides(tree, args.set, f"{path} with --preset {args.preset}")


def rendered_batch(cfg: Config, batch_size: int) -> list[Any]:
    """``batch_size`` frames of the world rendered for the model's setup (one per scene: varied content)."""
    world = SyntheticWorld(WorldConfig(seed=3, num_scenes=batch_size, frames_per_scene=1,
                                       setup=cfg.resolved_model().setup))
    return [world[i] for i in range(batch_size)]


def make_trainer(cfg: Config, samples: list[Any], precision: str, channels_last: bool, out: str) -> Trainer:
    """A ``Trainer`` of ``cfg`` with the given precision and layout over ``samples`` (one batch)."""
    tree = config_to_dict(cfg)
    tree["train"] |= {"precision": precision, "channels_last": channels_last, "batch_size": len(samples),
                      "grad_accum": 1, "num_workers": 0, "camera_dropout": 0.0}
    vcfg = config_from_dict(tree, "throughput variant")
    torch.manual_seed(0)
    model = create_model(vcfg.resolved_model())
    return Trainer(vcfg, model, samples, out, progress=False)


def train_step(trainer: Trainer, batch: Any) -> Callable[[], None]:
    """One real optimizer step of ``trainer`` on ``batch``."""
    def step() -> None:
        trainer.train_mode()
        trainer.train_step(iter([batch]))
    return step


def counted_flops(trainer: Trainer, step: Callable[[], None]) -> tuple[int, int]:
    """``(total, optimizer)`` FLOPs of one ``step``: the optimizer's share is what the counter gains while
    ``trainer.optimizer.step`` runs."""
    optimizer = trainer.optimizer
    with FlopCounterMode(display=False) as counter:
        marks: list[int] = []
        bound = optimizer.step

        def counted_step(*args: Any, **kwargs: Any) -> Any:
            marks.append(counter.get_total_flops())
            out = bound(*args, **kwargs)
            marks.append(counter.get_total_flops())
            return out

        optimizer.step = counted_step  # type: ignore[method-assign]
        try:
            step()
        finally:
            del optimizer.step  # the class's method again
    return counter.get_total_flops(), (marks[1] - marks[0]) if len(marks) == 2 else 0


def op_breakdown(step: Callable[[], None], top: int) -> dict[str, Any]:
    """One profiled step: self time per op name (ms and % of the profiled total), largest first."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    by_name: dict[str, float] = defaultdict(float)
    calls: dict[str, int] = defaultdict(int)
    for e in prof.key_averages():
        by_name[e.key] += e.self_cpu_time_total / 1e3
        calls[e.key] += e.count
    total = sum(by_name.values())
    ranked = sorted(by_name.items(), key=lambda kv: -kv[1])
    return {"profiled_ms": round(total, 1),
            "ops": [{"op": k, "ms": round(v, 2), "pct": round(100 * v / total, 1), "calls": calls[k]}
                    for k, v in ranked[:top]]}


# Settings every timed step shares (``make_trainer`` pins them; the threads are the process's): a --compare variant
# that changed one would be timed without it under its label.
_PINNED = {"train.batch_size": "--batch-size", "train.threads": "--threads", "train.precision": "the fixed variant",
           "train.channels_last": "the fixed variant", "train.grad_accum": "one micro-batch per step",
           "train.camera_dropout": "no dropout", "train.num_workers": "no loader"}


def parse_compare(spec: str) -> tuple[str, list[str]]:
    """``"LABEL: KEY=VALUE KEY=VALUE"`` -> ``(LABEL, [KEY=VALUE, ...])``.

    Raises:
        ValueError: no label, a label with spaces, no override, an override without ``=``, or one of a setting every
            timed step shares (``_PINNED``: the batch size, threads, precision, layout, ...).
    """
    label, sep, rest = spec.partition(":")
    label, overrides = label.strip(), rest.split()
    if not sep or not label or " " in label or not overrides or any("=" not in o for o in overrides):
        raise ValueError(f"--compare {spec!r}: expected 'LABEL: KEY=VALUE [KEY=VALUE ...]', "
                         "e.g. 'wide: model.trunk.stem_width=32'")
    for override in overrides:
        key = override.split("=", 1)[0].strip()
        if key in _PINNED:
            raise ValueError(f"--compare {spec!r}: {key} is the same for every compared step ({_PINNED[key]}); "
                             "compare it in separate runs")
    return label, overrides


def compare_configs(args: argparse.Namespace, cfg: Config) -> list[tuple[str, list[str], Config]]:
    """``(label, overrides, config)`` of the config itself (``cfg``, label ``config``) and of each ``--compare``
    variant, loaded before anything is timed so a bad override fails at once (ConfigError naming it)."""
    out: list[tuple[str, list[str], Config]] = [("config", [], cfg)]
    for spec in args.compare:
        label, overrides = parse_compare(spec)
        try:
            cfg = step_config(argparse.Namespace(config=args.config, set=[*args.set, *overrides], preset=args.preset))
        except ConfigError as e:  # name the option the user typed, not the --set it became
            raise ConfigError(f"--compare {spec!r}: {e}") from None
        out.append((label, overrides, cfg))
    return out


def compare_variants(args: argparse.Namespace, variants: list[tuple[str, list[str], Config]], precision: str,
                     channels_last: bool, best_peak: float, out: str) -> list[dict[str, Any]]:
    """The config's step against each ``--compare`` variant's, timed in interleaved rounds (see the module doc)."""
    batch_size = args.batch_size or variants[0][2].train.batch_size
    steps, flops = {}, {}
    for label, _, vcfg in variants:
        samples = rendered_batch(vcfg, batch_size)
        trainer = make_trainer(vcfg, samples, precision, channels_last, os.path.join(out, label))
        steps[label] = train_step(trainer, collate(samples))
        total, of_optimizer = counted_flops(trainer, steps[label])
        flops[label] = total - of_optimizer
    per_round: dict[str, list[float]] = {label: [] for label in steps}
    for r in range(args.rounds):
        # the order alternates, so no variant always runs first (a warmer or colder cache)
        for label, step in (list(steps.items()) if r % 2 == 0 else list(steps.items())[::-1]):
            per_round[label].append(best_of(step, args.repeats))
    base = min(per_round["config"])
    rows = []
    for label, overrides, _ in variants:
        seconds = min(per_round[label])
        gflops = flops[label] / seconds / 1e9
        rows.append({"label": label, "overrides": overrides, "model_gflop": round(flops[label] / 1e9, 2),
                     "step_ms": round(1e3 * seconds, 1),
                     "step_ms_per_round": [round(1e3 * s, 1) for s in per_round[label]],
                     "vs_config": round(seconds / base, 3), "gflop_per_s": round(gflops, 1),
                     "pct_of_matmul_peak": round(100 * gflops / best_peak, 1)})
    return rows


def run(args: argparse.Namespace) -> dict[str, Any]:
    cfg = step_config(args)
    to_compare = compare_configs(args, cfg) if args.compare else []
    threads = args.threads or cfg.train.threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    samples = rendered_batch(cfg, args.batch_size or cfg.train.batch_size)
    batch = collate(samples)
    peaks = {"matmul": {}, "conv3x3": {}}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        peaks["matmul"][name] = matmul_peaks(dtype, args.matmul_sizes, args.repeats)
        peaks["conv3x3"][name] = conv_peaks(dtype, args.conv_channels, args.repeats)
    best = {kind: {p: max(v.values()) for p, v in by_precision.items()} for kind, by_precision in peaks.items()}
    variants = []
    with tempfile.TemporaryDirectory() as tmp:
        for precision in ("fp32", "bf16"):
            if precision == "bf16" and not device_has_fast_bf16(torch.device("cpu")):
                continue
            for layout in ("nchw", "channels_last"):
                trainer = make_trainer(cfg, samples, precision, layout == "channels_last", tmp)
                step = train_step(trainer, batch)
                flops, optimizer_flops = counted_flops(trainer, step)
                model_flops = flops - optimizer_flops
                seconds = best_of(step, args.repeats)
                gflops = model_flops / seconds / 1e9
                variants.append({
                    "precision": precision, "layout": layout, "step_gflop": round(flops / 1e9, 2),
                    "model_gflop": round(model_flops / 1e9, 2), "optimizer_gflop": round(optimizer_flops / 1e9, 2),
                    "step_s": round(seconds, 4), "samples_per_s": round(len(samples) / seconds, 2),
                    "gflop_per_s": round(gflops, 1),
                    "pct_of_matmul_peak": round(100 * gflops / best["matmul"][precision], 1),
                    "pct_of_conv_peak": round(100 * gflops / best["conv3x3"][precision], 1),
                    "where_time_goes": op_breakdown(step, args.top_ops)})
    trained = cfg.train
    default_precision = "bf16" if trained.precision in ("auto", "bf16") and any(
        v["precision"] == "bf16" for v in variants) else "fp32"
    default = next(v for v in variants if v["precision"] == default_precision and
                   v["layout"] == ("channels_last" if trained.channels_last else "nchw"))
    compared = None
    if to_compare:
        with tempfile.TemporaryDirectory() as tmp:
            compared = compare_variants(args, to_compare, default["precision"], default["layout"] == "channels_last",
                                        best["matmul"][default["precision"]], tmp)
    m = cfg.resolved_model()
    return {
        "benchmark": "throughput", "config": str(args.config or default_demo_config()), "preset": args.preset,
        "image_size": list(m.setup.image_size), "cameras": len(m.setup.rigs[0].cameras),
        "batch_size": len(samples), "threads": threads,
        "machine": {"cpu": cpu_model(), "torch": torch.__version__,
                    "cpu_bf16_flags": sorted(f for f in cpu_flags() if "bf16" in f or "amx" in f),
                    "loadavg_1min": round(os.getloadavg()[0], 2), "logical_cpus": os.cpu_count()},
        "peaks_gflop_per_s": peaks, "best_peak_gflop_per_s": best, "variants": variants,
        "config_variant": {"precision": default["precision"], "layout": default["layout"]},
        "goal": {"what": f"the config's training step at >= {GOAL_PCT:g} % of the best bf16 matmul peak",
                 "pct_of_matmul_peak": default["pct_of_matmul_peak"],
                 "met": default["pct_of_matmul_peak"] >= GOAL_PCT if default["precision"] == "bf16" else None},
        "compared": compared,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=None, help="training config (default: configs/demo.yaml)")
    p.add_argument("--set", action="append", default=[], help="config override, e.g. train.batch_size=8")
    p.add_argument("--preset", default=None, help="measure this model preset (tiny, base, ...) instead")
    p.add_argument("--batch-size", type=int, default=None, help="samples per step (default: the config's)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: the config's train.threads)")
    p.add_argument("--repeats", type=int, default=5, help="timed repetitions; the fastest is kept")
    p.add_argument("--matmul-sizes", type=int, nargs="+", default=[256, 512, 1024, 2048, 4096])
    p.add_argument("--conv-channels", type=int, nargs="+", default=[64, 128, 256])
    p.add_argument("--top-ops", type=int, default=15, help="ops listed per variant in where_time_goes")
    p.add_argument("--compare", action="append", default=[], metavar="'LABEL: KEY=VALUE ...'",
                   help="also time the config's step with these overrides, interleaved with the config's own")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds of --compare timing")
    args = p.parse_args(argv)
    if (args.batch_size is not None and args.batch_size < 1) or args.repeats < 1 or args.rounds < 1 or (
            args.threads is not None and args.threads < 1):
        p.error("--batch-size, --repeats, --rounds and --threads must be >= 1")
    try:
        labels = [parse_compare(spec)[0] for spec in args.compare]
    except ValueError as e:
        p.error(str(e))
    if len(set(labels)) != len(labels) or "config" in labels:
        p.error("--compare labels must differ from each other and from 'config'")
    try:
        result = run(args)
    except ConfigError as e:  # a bad --config or --set: the message names the file and the field
        p.error(str(e))
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
