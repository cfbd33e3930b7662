"""One convention across commands: bad input exits 2 with one ``error`` line and
no traceback in every command, the output option is ``--out/-o`` everywhere, suites are found from
any directory, ``eval --tasks`` selects tasks, and output written to a pipe or log is plain, complete
rows (no 80-column wrapping)."""

import os

import pytest
import typer
import yaml
from typer.testing import CliRunner

from hydranet.cli import app

runner = CliRunner()


def _commands() -> dict:
    return dict(typer.main.get_command(app).commands)


def test_every_output_option_is_spelled_out_and_o():
    found = 0
    for name, cmd in _commands().items():
        for param in cmd.params:
            if param.name in ("out", "output"):
                found += 1
                assert "--out" in param.opts and "-o" in param.opts, f"{name}: {param.opts}"
    assert found >= 12  # train, demo, generate, show, eval, gate, report, export, quantize, infer, cache, merge


def test_every_option_has_help_and_every_model_argument_names_zoo():
    from hydranet.cli.app import CHECKPOINT_HELP

    missing, models = [], 0
    for name, cmd in _commands().items():
        for param in cmd.params:
            if not (getattr(param, "help", None) or "").strip():
                missing.append(f"{name} {'/'.join(param.opts)}")
            if CHECKPOINT_HELP in (getattr(param, "help", None) or ""):
                models += 1
    assert missing == []
    # eval, gate (2), report, export, predict, mine, label, autolabel-quality, cache-features, merge, train, view
    assert models >= 13


@pytest.mark.parametrize("args", [
    ["train", "-c", "{tmp}/missing.yaml"],
    ["train", "-c", "{cfg}", "--set", "train.lr=inf", "-o", "{tmp}/run"],
    ["train", "--resume", "-o", "{tmp}/no_run"],
    ["demo", "--set", "train.lr=inf", "-o", "{tmp}/demo"],
    ["eval", "{tmp}/no_ckpt"],
    ["gate", "-a", "{tmp}/no_a", "-b", "{tmp}/no_b"],
    ["report", "{tmp}/no_ckpt"],
    ["export", "{tmp}/no_ckpt", "-o", "{tmp}/m.onnx"],
    ["quantize", "{tmp}/no.onnx"],
    ["infer", "{tmp}/no.onnx"],
    ["generate", "-o", "{tmp}/d", "--config", "{tmp}/missing.yaml"],
    ["data-info", "{tmp}/no_data"],
    ["show", "--data", "{tmp}/no_data", "-o", "{tmp}/s.png"],
    ["cache-features", "--ckpt", "{tmp}/no_ckpt", "--data", "synthetic", "-o", "{tmp}/c"],
    ["merge", "{tmp}/no_base", "{tmp}/no_heads", "-o", "{tmp}/m"],
], ids=lambda a: a[0] + ("-" + a[1].strip("-") if a[1].startswith("--") else ""))
def test_bad_input_exits_2_without_a_traceback(tmp_path, args):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump({"data": {"datasets": {"w": {"kind": "world", "frames": 1}}},
                                   "model": {"preset": "tiny", "tasks": {"drivable": {}}}}))
    res = runner.invoke(app, [a.format(tmp=tmp_path, cfg=cfg) for a in args])
    assert res.exit_code == 2, (res.exit_code, res.output, res.exception)
    assert "Traceback" not in res.output and isinstance(res.exception, SystemExit)
    assert "rror" in res.output  # "error:" or click's "Error:"


def test_suites_resolve_relative_to_the_package_from_any_directory(tmp_path, monkeypatch):
    from hydranet.eval.suite import load_suites, resolve_suite_path

    monkeypatch.chdir(tmp_path)  # no suites/ here
    shipped = load_suites("suites")  # before: "suites: no such suite file or directory"
    assert len(shipped) >= 5 and {s.name for s in shipped} >= {"day", "night"}
    assert resolve_suite_path("suites/night.yaml").is_file()
    assert [s.name for s in load_suites("night.yaml")] == ["night"]
    (tmp_path / "suites").mkdir()
    (tmp_path / "suites" / "mine.yaml").write_text("scenarios: {a: {}}\nseeds: [0, 1]\nframes: 1\ntasks: {depth: {}}\n")
    assert [s.name for s in load_suites("suites")] == ["mine"]  # one in the working directory wins


def test_eval_tasks_selects_tasks(tmp_path):
    from hydranet.eval.suite import SuiteError, load_suites, select_tasks

    suites = load_suites("suites")
    picked = select_tasks(suites, ["drivable"])
    assert picked and all(list(s.tasks) == ["drivable"] for s in picked)
    with pytest.raises(SuiteError, match=r"--tasks \['warp_drive'\]: no suite evaluates them"):
        select_tasks(suites, ["warp_drive"])
    res = runner.invoke(app, ["eval", str(tmp_path), "--tasks", "warp_drive"])
    assert res.exit_code == 2


def test_non_tty_tables_are_plain_complete_rows():
    from rich.table import Table

    from hydranet.console import make_console

    console = make_console()  # pytest captures stdout: not a terminal
    assert not console.is_terminal
    table = Table()
    for col in ("suite", "task", "metric", "baseline", "candidate", "delta", "95% CI", "tolerance", "result"):
        table.add_column(col, no_wrap=True)
    row = ("curves_lights", "traffic_light", "balanced_accuracy", "0.8571", "0.8000", "-0.0571",
           "[-0.1200, +0.0100]", "0.0200", "REGRESSION (beyond tolerance)")
    table.add_row(*row)
    with console.capture() as cap:
        console.print(table)
    lines = cap.get().splitlines()
    assert any(all(cell in line for cell in row) for line in lines), cap.get()  # before: cut at 80 columns
    assert "\x1b[" not in cap.get()  # no colour codes in logs


def test_training_logs_print_periodic_progress_lines_when_not_a_terminal(tmp_path):
    from hydranet.console import make_console
    from hydranet.train.logging import TrainLogger

    console = make_console(stderr=True)
    logger = TrainLogger(tmp_path, ["depth"], 100, progress=True, console=console)
    assert logger.progress is None  # a live bar would print nothing into a log file
    with console.capture() as cap, logger:
        for step in (10, 20):
            logger.log({"step": step, "lr": 1e-3, "grad_norm": 1.0, "loss": 0.5, "task_loss": {"depth": 0.5},
                        "weights": {"depth": 1.0}, "skipped_steps": 0, "samples_per_s": 3.0})
    assert [line.split()[:2] for line in cap.get().splitlines()] == [["step", "10/100"], ["step", "20/100"]]


def test_cli_errors_are_one_plain_line_in_logs():
    res = runner.invoke(app, ["export", "/nonexistent/run", "-o", os.devnull])
    assert res.exit_code == 2
    assert res.output == "error: CHECKPOINT: /nonexistent/run: no such checkpoint or run directory\n"  # one line


def test_generate_takes_a_training_configs_world_so_the_readme_loop_chains(tmp_path):
    from pathlib import Path

    from hydranet.data.manifest import read_manifest
    from hydranet.train.config import load_config

    demo = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"
    out = tmp_path / "eval"
    res = runner.invoke(app, ["generate", "--config", str(demo), "--dataset", "eval", "--frames", "1", "-o", str(out)])
    assert res.exit_code == 0, res.output
    model = load_config(demo).resolved_model()
    m = read_manifest(out)
    assert tuple(m.image_size) == tuple(model.setup.image_size)  # before: 128x256 frames the demo model rejects
    assert m.setup == model.setup  # the world rendered the model's setup, declared once in model.setup
    bad = runner.invoke(app, ["generate", "--config", str(demo), "--dataset", "nope", "-o", str(tmp_path / "x")])
    assert bad.exit_code == 2 and "no world dataset 'nope' (world datasets: ['demo', 'eval'])" in bad.output


def test_error_line_is_plain_on_a_pipe_and_red_on_a_terminal(capsys, monkeypatch):
    """Before: the literal markup ``[red]error:[/red]`` on every error (printed with markup off)."""
    from hydranet.cli.errors import fail

    monkeypatch.delenv("FORCE_COLOR", raising=False)
    monkeypatch.delenv("TTY_COMPATIBLE", raising=False)
    assert fail("shard [3] of /data/x is corrupt").exit_code == 2
    assert capsys.readouterr().err == "error: shard [3] of /data/x is corrupt\n"  # brackets in the message kept
    monkeypatch.setenv("FORCE_COLOR", "1")  # what a terminal gets
    fail("bad")
    err = capsys.readouterr().err
    assert "\x1b[31merror:" in err and "[red]" not in err and "bad" in err


def test_data_info_verify_of_a_replaced_shard_is_bad_input(tmp_path):
    """A shard whose sha256 differs from the manifest (same size) is a corrupt input: exit 2, like a truncated
    one (before: exit 1), with one plain ``error:`` line naming the shard."""
    from hydranet.world.config import WorldConfig
    from hydranet.world.generate import generate

    root = tmp_path / "data"
    generate(root, WorldConfig(seed=1, num_scenes=1, frames_per_scene=1, setup={"image_size": (32, 64)}), frames=1)
    shard = root / "shard-000000.tar"
    data = bytearray(shard.read_bytes())
    data[len(data) // 3] ^= 0xFF
    shard.write_bytes(bytes(data))
    res = runner.invoke(app, ["data-info", str(root), "--verify"])
    assert res.exit_code == 2, (res.exit_code, res.output)
    assert "error: " in res.output and "shard-000000.tar" in res.output and "[red]" not in res.output
    assert "Traceback" not in res.output


def test_a_dead_peer_rank_is_named_as_such_not_as_a_hydranet_bug(monkeypatch):
    """Before: gloo's "Connection closed by peer" under torchrun read "internal error ... this is a hydranet bug"."""
    import torch.distributed as dist

    from hydranet.cli.errors import FAILED, describe

    monkeypatch.setenv("RANK", "1")
    for e in (dist.DistBackendError("[gloo/transport/tcp/pair.cc:534] Connection closed by peer [127.0.0.1]:29500"),
              RuntimeError("[../third_party/gloo/gloo/transport/tcp/unbound_buffer.cc:81] Timed out waiting 300000ms")):
        message, code = describe(e)
        assert code == FAILED and message.startswith("rank 1: a peer process of this torchrun job died")
        assert "hydranet bug" not in message and "--resume" in message
    message, code = describe(KeyError("lane"))  # a bare key lookup that failed is a bug, not bad input
    assert code == FAILED and message.startswith("internal error: KeyError")


def test_one_file_outputs_never_replace_a_zoo_entry_or_a_datasets_parts(tmp_path):
    """Before: `eval zoo:tiny-world -o .../pretrained/tiny-world/provenance.json` replaced the shipped model's
    provenance (no zoo command loaded after it), `-o DATA/manifest.json` a dataset's manifest, and `-o DIR` failed
    after the work with a raw OS error."""
    from hydranet.model import find_pretrained

    zoo = find_pretrained("tiny-world").directory
    before = (zoo / "provenance.json").read_bytes()
    res = runner.invoke(app, ["eval", "zoo:tiny-world", "--data", "synthetic", "--frames", "1", "-o",
                              str(zoo / "provenance.json")])
    assert res.exit_code == 2 and "lies inside the input" in " ".join(res.output.split())
    assert (zoo / "provenance.json").read_bytes() == before
    dataset = tmp_path / "data"
    dataset.mkdir()
    (dataset / "manifest.json").write_text("{}")
    for out, words in ((dataset / "manifest.json", "is part of a hydranet dataset, run or checkpoint"),
                       (dataset, "is a directory")):
        res = runner.invoke(app, ["report", "zoo:tiny-world", "--frames", "1", "-o", str(out)])
        assert res.exit_code == 2 and words in " ".join(res.output.split()), res.output
    assert (dataset / "manifest.json").read_text() == "{}"


def _cuda_absent(monkeypatch, built: bool = False) -> None:
    """This process sees no CUDA (nor an Apple GPU): a CPU-only torch build (``built=False``) or a CUDA build
    without a GPU."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.cuda, "is_built", lambda: built)


_DEVICE_COMMANDS = {
    "eval --data": ["eval", "zoo:tiny-world", "--data", "synthetic", "--frames", "1"],
    "eval": ["eval", "zoo:tiny-world", "--frames", "1"],
    "gate": ["gate", "-a", "zoo:tiny-world", "-b", "zoo:tiny-world", "--frames", "1"],
    "report": ["report", "zoo:tiny-world", "--frames", "1", "-o", "{tmp}/out.html"],
    "cache-features": ["cache-features", "--ckpt", "zoo:tiny-world", "--data", "synthetic", "-n", "1",
                       "-o", "{tmp}/out"],
    "merge": ["merge", "zoo:tiny-world", "zoo:tiny-world:drivable", "--gate-suite", "suites", "-o", "{tmp}/out"],
}


def _one_error_line(res) -> str:  # noqa: ANN001 - click's Result
    assert "Traceback" not in res.output and isinstance(res.exception, SystemExit), (res.exception, res.output)
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.output  # nothing printed before it ("merging")
    assert "hydranet bug" not in lines[0]
    return lines[0]


@pytest.mark.parametrize("command", list(_DEVICE_COMMANDS))
def test_device_cuda_without_cuda_is_bad_input_naming_the_option(tmp_path, monkeypatch, command):
    """``--device cuda`` on a CPU-only torch build was an internal error (torch's AssertionError, exit 1), and
    ``merge`` printed "merging into" first; now every command's --device goes through ``resolve_device`` first."""
    _cuda_absent(monkeypatch)
    args = [a.format(tmp=tmp_path) for a in _DEVICE_COMMANDS[command]] + ["--device", "cuda"]
    res = runner.invoke(app, args)
    assert res.exit_code == 2, (res.exit_code, res.output)
    line = _one_error_line(res)
    assert line.startswith("error: --device 'cuda': cuda requested but this torch build") and "has no CUDA" in line
    assert line.endswith("usable here: auto, cpu"), line
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.html").exists()


@pytest.mark.parametrize("command", ["eval --data", "merge"])
def test_device_cuda_with_no_gpu_visible_says_so(tmp_path, monkeypatch, command):
    _cuda_absent(monkeypatch, built=True)
    res = runner.invoke(app, [a.format(tmp=tmp_path) for a in _DEVICE_COMMANDS[command]] + ["--device", "cuda:1"])
    assert res.exit_code == 2, (res.exit_code, res.output)
    line = _one_error_line(res)
    assert line.startswith("error: --device 'cuda:1': no CUDA device visible") and "usable here: auto, cpu" in line


@pytest.mark.parametrize("command", ["eval --data", "cache-features", "merge"])
def test_an_unknown_device_is_bad_input_listing_the_accepted_ones(tmp_path, command):
    """``--device foo`` was torch's RuntimeError listing its ~20 device types, reported as a hydranet bug."""
    res = runner.invoke(app, [a.format(tmp=tmp_path) for a in _DEVICE_COMMANDS[command]] + ["--device", "foo"])
    assert res.exit_code == 2, (res.exit_code, res.output)
    line = _one_error_line(res)
    assert line.startswith("error: --device 'foo': not a device hydranet runs on; expected auto, cpu, cuda, cuda:N "
                           "or mps (usable here: auto, cpu"), line


@pytest.mark.parametrize("command", ["train", "demo"])
def test_train_device_cuda_without_cuda_is_bad_input_naming_the_field(tmp_path, monkeypatch, command):
    """``--set train.device=cuda`` had a good message wrapped as an internal error (exit 1); ``demo`` rendered its
    data for a minute before it."""
    _cuda_absent(monkeypatch)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump({"data": {"datasets": {"w": {"kind": "world", "frames": 1}}},
                                   "model": {"preset": "tiny", "tasks": {"drivable": {}}}}))
    args = ["train", "-c", str(cfg)] if command == "train" else ["demo"]
    res = runner.invoke(app, [*args, "--set", "train.device=cuda", "-o", str(tmp_path / "out")])
    assert res.exit_code == 2, (res.exit_code, res.output)
    line = [ln for ln in res.output.splitlines() if ln.startswith("error:")]
    assert line == [line[0]] and line[0].startswith("error: train.device 'cuda': cuda requested but this torch "
                                                    "build"), res.output
    assert "usable here: auto, cpu" in line[0] and "hydranet bug" not in res.output
    assert not (tmp_path / "out").exists()


def test_resolve_device_is_the_one_reading_of_a_device(monkeypatch):
    import torch

    from hydranet.train import DeviceError, resolve_device
    from hydranet.train.distributed import select_device

    _cuda_absent(monkeypatch)
    assert resolve_device(None) == resolve_device("auto") == resolve_device(" cpu ") == torch.device("cpu")
    with pytest.raises(DeviceError, match=r"^train\.device 'cuda': cuda requested"):
        select_device("cuda", 0)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # two GPUs (nothing here touches them)
    monkeypatch.setattr(torch.backends.cuda, "is_built", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device(None, index=1) == resolve_device("cuda", index=1) == torch.device("cuda", 1)
    assert resolve_device("cuda:0", index=1) == torch.device("cuda", 0)
    with pytest.raises(DeviceError, match=r"^--device 'cuda:2': 2 CUDA device\(s\) visible \(cuda:0\.\.cuda:1\); "
                                          r"usable here: auto, cpu, cuda, cuda:0\.\.1"):
        resolve_device("cuda:2")
    with pytest.raises(DeviceError, match="not a device hydranet runs on"):
        resolve_device("meta")
