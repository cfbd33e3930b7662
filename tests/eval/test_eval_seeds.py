"""The seed range a report and the eval table print: exactly the worlds the suite runs (``seeds: [start, stop)``
is half-open), never the ambiguous ``9100..9101`` the report header printed for ``seeds: [9100, 9102]``."""

import yaml

from hydranet.eval.report import build_report
from hydranet.eval.runner import SuiteRun
from hydranet.eval.suite import load_suite


def suite_with_seeds(tmp_path, seeds):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"scenarios": {"day": {}}, "seeds": seeds, "frames": 1,
                                    "tasks": {"drivable": {"thresholds": {"miou": ">= 0.5"}}}}))
    return load_suite(path)


def test_seeds_text_names_every_seed_run_and_no_other(tmp_path):
    assert suite_with_seeds(tmp_path, [7, 8]).seeds_text() == "seed 7"
    assert suite_with_seeds(tmp_path, [9100, 9102]).seeds_text() == "seeds 9100, 9101"
    assert suite_with_seeds(tmp_path, [5, 8]).seeds_text() == "seeds 5, 6, 7"
    assert suite_with_seeds(tmp_path, [0, 10]).seeds_text() == "seeds 0-9 (10)"


def test_report_header_prints_the_seeds_of_the_suite_file(tmp_path):
    suite = suite_with_seeds(tmp_path, [9100, 9102])
    run = SuiteRun(suite, frames=[], tasks={}, skipped=["drivable"])
    html = build_report(None, [run], [[]], samples=0)
    assert "seeds 9100, 9101 ·" in html
    assert "9100..9101" not in html
