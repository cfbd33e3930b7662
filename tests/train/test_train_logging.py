"""The rank-0 training logs (``hydranet.train.logging``): a resumed run continues ``train_log.jsonl`` and TensorBoard
from the step it resumes at, so each step is logged once, in order, however often the run was stopped."""

import json
import time
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from train_testkit import make_trainer

from hydranet.cli.errors import describe
from hydranet.train.logging import TrainLogError, TrainLogger, trim_log


def _records(run: Path) -> list[tuple[str, int]]:
    """``(kind, step)`` of each line of the run's ``train_log.jsonl``: ``train`` windows and ``eval`` results."""
    lines = (run / "train_log.jsonl").read_text().splitlines()
    return [("eval" if "eval" in r else "train", r["step"]) for r in map(json.loads, lines)]


def _tb_steps(run: Path, tag: str) -> list[int]:
    """The steps TensorBoard shows for ``tag`` (after it purged what a resumed run's ``purge_step`` discards)."""
    acc = EventAccumulator(str(run / "tb"))
    acc.Reload()
    return [e.step for e in acc.Scalars(tag)]


def _next_second() -> None:
    """Wait into the next second. TensorBoard reads a run's event files in name order, and a name is
    ``events.out.tfevents.<unix second>.<host>.<pid>.<counter>``: two writers of one process within one second
    sort by their counter as text (``...10`` before ``...9``), so a resumed attempt's purge could be read before the
    stopped attempt's events. A resume is a later process in a later second; the tests resume in-process."""
    time.sleep(1.01 - time.time() % 1.0)


def _crash_at(trainer, step: int) -> None:
    """Make ``trainer.fit()`` die (as a kill would) when it is about to train step ``step + 1``; returns in the
    next second (``_next_second``), when a resumed attempt would start."""
    train_step = trainer.train_step

    def crash(batches):
        if trainer.step == step:
            raise RuntimeError("crash")
        return train_step(batches)

    trainer.train_step = crash
    with pytest.raises(RuntimeError, match="crash"):
        trainer.fit()
    _next_second()


EXPECTED = [("train", 1), ("train", 2), ("eval", 2), ("train", 3), ("train", 4), ("eval", 4), ("train", 5),
            ("train", 6), ("eval", 6)]


@pytest.mark.parametrize("ckpt_every", [3, 0], ids=["from-step-3", "before-the-first-checkpoint"])
def test_a_resumed_run_logs_each_step_once_in_order(tmp_path, ckpt_every):
    """Steps 1..5 trained and logged, the last checkpoint at step 3 (or none: the run resumes at step 0), then a
    crash. Before: the log held steps 1..5 and then 4..6 (or 1..6) again, and TensorBoard drew both curves."""
    kw = {"steps": 6, "log_every": 1, "eval_every": 2, "eval_batches": 1}
    _crash_at(make_trainer(tmp_path, ckpt_every=ckpt_every, **kw), 5)
    assert _records(tmp_path) == EXPECTED[:7]
    resumed = make_trainer(tmp_path, **kw)
    assert resumed.resume() == (ckpt_every == 3)
    assert resumed.step == (3 if ckpt_every else 0)
    resumed.fit()
    assert _records(tmp_path) == EXPECTED
    assert _tb_steps(tmp_path, "loss/total") == [1, 2, 3, 4, 5, 6]
    assert _tb_steps(tmp_path, "eval/tiny_depth/mae") == [2, 4, 6]


def test_a_new_run_does_not_trim_and_a_finished_resume_writes_nothing(tmp_path):
    make_trainer(tmp_path, steps=4, log_every=1).fit()
    before = (tmp_path / "train_log.jsonl").read_bytes()
    again = make_trainer(tmp_path, steps=4, log_every=1)
    assert again.resume() and again.step == 4
    again.fit()  # already finished: the log is left as it is
    assert (tmp_path / "train_log.jsonl").read_bytes() == before


def test_a_line_cut_short_by_a_kill_is_dropped_when_the_run_resumes(tmp_path):
    """A process killed while writing a line leaves part of it; before the fix the resume appended after it, and
    a reader of the log failed on the merged line."""
    kw = {"steps": 4, "log_every": 1, "ckpt_every": 2}
    _crash_at(make_trainer(tmp_path, **kw), 3)
    log = tmp_path / "train_log.jsonl"
    with log.open("a") as f:
        f.write('{"step": 4, "lr": 0.00')
    resumed = make_trainer(tmp_path, **kw)
    assert resumed.resume() and resumed.step == 2
    resumed.fit()
    assert _records(tmp_path) == [("train", s) for s in (1, 2, 3, 4)]
    assert _tb_steps(tmp_path, "loss/total") == [1, 2, 3, 4]


def test_trim_log_keeps_steps_up_to_the_resumed_one_and_drops_a_partial_last_line(tmp_path):
    log = tmp_path / "train_log.jsonl"
    lines = ['{"step": 1, "lr": 0.1}', '{"step": 2, "lr": 0.1}', '{"eval": {"d": {"mae": 1.0}}, "step": 2}',
             '{"step": 3, "lr": 0.1}']
    log.write_text("\n".join(lines) + "\n")
    assert trim_log(log, 2) is False
    assert log.read_text() == "\n".join(lines[:3]) + "\n"
    assert not list(tmp_path.glob(".tmp-*"))  # the temporary file was renamed over the log
    log.write_text("\n".join(lines) + '\n{"step": 4, "l')  # killed mid-write
    assert trim_log(log, 3) is True
    assert log.read_text() == "\n".join(lines) + "\n"
    log.write_text("\n".join(lines) + "\n")
    assert trim_log(log, 0) is False and log.read_text() == ""  # resumed before the first checkpoint
    assert trim_log(tmp_path / "missing.jsonl", 3) is False and not (tmp_path / "missing.jsonl").exists()


@pytest.mark.parametrize("bad", ['{"step": 2, "lr"', "not json", '{"lr": 0.1}', '[1, 2]', '{"step": "2"}'])
def test_a_corrupt_line_before_the_last_is_an_error_naming_the_file_and_line(tmp_path, bad):
    log = tmp_path / "train_log.jsonl"
    # line 2 lies between the resumed step's record and a later one: it may be step 1's eval record, to keep
    text = f'{{"step": 1, "lr": 0.1}}\n{bad}\n{{"step": 3, "lr": 0.1}}\n'
    log.write_text(text)
    with pytest.raises(TrainLogError, match=rf"^{log}: line 2 is not a training log record") as e:
        TrainLogger(tmp_path, ["depth"], 10, progress=False, resume_step=1)
    assert log.read_text() == text  # left as it was
    message, code = describe(e.value)  # the CLI's one error line, exit 2 (bad input)
    assert code == 2 and "\n" not in message and message.startswith(f"{log}: line 2")


def test_tensorboard_hides_what_an_earlier_attempt_logged_after_the_resumed_step(tmp_path):
    record = {"lr": 1e-3, "grad_norm": 1.0, "loss": 0.5, "task_loss": {"depth": 0.5}, "weights": {"depth": 1.0},
              "skipped_steps": 0, "samples_per_s": 3.0}
    with TrainLogger(tmp_path, ["depth"], 10, progress=False) as logger:
        for step in (2, 4, 6):
            logger.log({"step": step, **record})
    _next_second()
    with TrainLogger(tmp_path, ["depth"], 10, progress=False, resume_step=4) as logger:  # resumed at step 4
        logger.log({"step": 6, **record, "loss": 0.25})
    assert _tb_steps(tmp_path, "loss/total") == [2, 4, 6]
    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    assert acc.Scalars("loss/total")[-1].value == 0.25  # the resumed run's step 6, not the earlier attempt's
    assert _records(tmp_path) == [("train", 2), ("train", 4), ("train", 6)]


def test_a_damaged_line_in_the_dropped_tail_is_dropped_with_it(tmp_path):
    """Everything after the first record past the resumed step is dropped, so a damaged line there is no error."""
    log = tmp_path / "train_log.jsonl"
    log.write_text('{"step": 1}\n{"step": 2}\n{"step": 3}\nnot json\n{"step": 4}\n')
    assert trim_log(log, 2) is False
    assert log.read_text() == '{"step": 1}\n{"step": 2}\n'
