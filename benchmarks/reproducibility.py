"""How reproducible is the demo? The same demo config trained and evaluated three times: twice with the same
settings on this machine, once with another compute-thread count (``train.threads``). Prints one JSON object:
per pair, whether the held-out metrics and the final weights are bit-identical, and if not, the largest
metric difference (absolute, over every metric of every task) and the largest weight difference.

    python benchmarks/reproducibility.py                      # demo config, 120 steps, 96 + 24 frames
    python benchmarks/reproducibility.py --steps 520 --full   # the demo as `make demo` runs it
    python benchmarks/reproducibility.py --runs runs/demo OTHER/runs/demo   # two finished demo runs, compared

The README's reproducibility statement is rendered from this JSON (docs/results/reproducibility.json).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from hydranet.console import make_console
from hydranet.train.demo import default_demo_config, run_demo


def _flat(metrics: dict[str, dict[str, float | None]]) -> dict[str, float | None]:
    return {f"{t}.{k}": v for t, m in metrics.items() for k, v in m.items()}


def _weights(run: Path) -> dict[str, torch.Tensor]:
    ckpt = json.loads((run / "train" / "checkpoints" / "latest.json").read_text())["checkpoint"]
    return load_file(str(run / "train" / "checkpoints" / ckpt / "model.safetensors"))


def compare(a: dict[str, Any], b: dict[str, Any], run_a: Path, run_b: Path) -> dict[str, Any]:
    """Bit-identity and the largest differences between two demo results (``run_demo``'s return values)."""
    fa, fb = _flat(a["metrics"]), _flat(b["metrics"])
    diffs = {}
    for k in fa.keys() & fb.keys():
        x, y = fa[k], fb[k]
        if x is None or y is None or (isinstance(x, float) and math.isnan(x)):
            continue
        diffs[k] = abs(float(x) - float(y))
    worst = max(diffs, key=diffs.get) if diffs else None
    wa, wb = _weights(run_a), _weights(run_b)
    wdiff = max((float((wa[k].float() - wb[k].float()).abs().max()) for k in wa if k in wb and wa[k].numel()),
                default=0.0)
    headline = {t: next(iter(m)) for t, m in a["metrics"].items() if m}
    head_diffs = {f"{t}.{k}": diffs.get(f"{t}.{k}") for t, k in headline.items()}
    return {"metrics_identical": all(v == 0 for v in diffs.values()), "weights_identical": wdiff == 0.0,
            "max_metric_diff": diffs[worst] if worst else 0.0, "max_metric_diff_at": worst,
            "max_headline_diff": max((v for v in head_diffs.values() if v is not None), default=0.0),
            "headline_diffs": head_diffs, "max_weight_diff": wdiff, "metrics_compared": len(diffs)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", type=Path, default=None, help="demo config (default configs/demo.yaml)")
    ap.add_argument("--steps", type=int, default=120)
    ap.add_argument("--full", action="store_true", help="the config's own data sizes (default: 96 + 24 frames)")
    ap.add_argument("--threads", type=int, nargs=2, default=(1, 2), help="thread counts compared")
    ap.add_argument("--keep", type=Path, default=None, help="keep the runs here (default: a temporary folder)")
    ap.add_argument("--runs", type=Path, nargs=2, default=None, help="compare two finished demo output folders "
                    "(metrics.json + train/) instead of training")
    args = ap.parse_args(argv)
    if args.runs:
        a, b = (json.loads((r / "metrics.json").read_text()) for r in args.runs)
        return {"runs": [str(r) for r in args.runs], "steps": a["train"]["steps"], "cpu": a["meta"]["machine"]["cpu"],
                "cpus": a["meta"]["machine"]["cpus"], "torch": a["meta"]["torch"], "threads": a["meta"]["threads"],
                "same_settings": compare({"metrics": a["trained"]}, {"metrics": b["trained"]}, *args.runs)}
    config = args.config or default_demo_config()
    sizes = [] if args.full else ["data.datasets.demo.frames=96", "data.datasets.demo.world.num_scenes=24",
                                  "data.eval.frames=24", "data.eval.world.num_scenes=6", "eval.frames=24"]
    console = make_console(stderr=True)
    with tempfile.TemporaryDirectory(prefix="hydranet-repro-") as tmp:
        root = args.keep or Path(tmp)
        runs, results = {}, {}
        for name, threads in (("a", args.threads[0]), ("a_again", args.threads[0]), ("b", args.threads[1])):
            runs[name] = root / name
            over = [*sizes, f"train.steps={args.steps}", f"train.threads={threads}"]
            results[name] = run_demo(runs[name], config, over, retrain=True, pictures=0, console=console)
        torch_threads = {n: results[n]["meta"]["threads"] for n in results}
        out = {
            "config": str(config), "steps": args.steps, "full_size": args.full, "threads": list(args.threads),
            "torch": torch.__version__, "cpu": results["a"]["meta"]["machine"]["cpu"],
            "cpus": results["a"]["meta"]["machine"]["cpus"], "torch_threads": torch_threads,
            "same_settings": compare(results["a"], results["a_again"], runs["a"], runs["a_again"]),
            "other_threads": compare(results["a"], results["b"], runs["a"], runs["b"]),
        }
    return out


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1:]), indent=1))
