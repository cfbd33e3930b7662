"""Suite YAML: the shipped suites load; bad files get errors naming the file and the field."""

from pathlib import Path

import pytest

from hydranet.eval.suite import SuiteError, Threshold, load_suite, load_suites, lower_is_better

SUITES = Path(__file__).resolve().parents[2] / "suites"

GOOD = """
world: {lighting: night}
scenarios:
  a: {fog: 0.0}
  b: {fog: 0.02}
seeds: [10, 12]
frames: 3
tasks:
  depth: {thresholds: {abs_rel: "<= 0.3"}}
  drivable: {thresholds: {miou: ">=0.5"}, tolerance: {miou: 0.01}}
"""


def write(tmp_path, text, name="s.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_shipped_suites_load():
    suites = load_suites(SUITES)
    assert len(suites) >= 5
    for s in suites:
        for name in s.scenarios:
            cfg = s.world_config(name, s.seeds[0])
            assert cfg.seed == s.seeds[0]


def test_good_suite(tmp_path):
    s = load_suite(write(tmp_path, GOOD))
    assert s.name == "s" and s.tasks["drivable"].thresholds["miou"] == Threshold(op=">=", value=0.5)
    assert s.world_config("b", 11).fog == 0.02 and s.world_config("b", 11).lighting == "night"
    assert s.tolerances("depth", "abs_rel") == {"abs_rel": s.default_tolerance}
    assert s.tolerances("drivable", "miou") == {"miou": 0.01}
    assert s.frame_indices(100) == [0, 50, 99] and s.frame_indices(2) == [0, 1]


@pytest.mark.parametrize("text, match", [
    (GOOD.replace("fog: 0.02", "fog: 0.9"), r"s\.yaml: scenarios\.b\.fog: fog must be"),
    (GOOD.replace("lighting: night", "lighting: noon"), r"s\.yaml: world\.lighting"),
    (GOOD.replace("fog: 0.0}", "fog: 0.0, nonsense: 1}"), r"scenarios\.a\.nonsense: unknown field \(typo\?\)"),
    (GOOD.replace('"<= 0.3"', '"< 0.3"'), r"tasks\.depth\.thresholds.*'>= 0\.5' or '<= 0\.3'"),
    (GOOD.replace("seeds: [10, 12]", "seeds: [12, 10]"), r"seeds: seeds must be \[start, stop\)"),
    (GOOD.replace("frames: 3", "frames: 0"), r"frames: Input should be greater"),
    (GOOD.replace("depth:", "telepathy:"), r"tasks\.telepathy: unknown task"),
    (GOOD.replace("miou: 0.01", "miou: -1"), r"tolerance for 'miou' must be >= 0"),
    (GOOD + "colour: red\n", r"s\.yaml: colour: unknown field \(typo\?\)"),
    (GOOD.replace("world: {lighting: night}", "world: {seed: 3}"), r"must not set 'seed'"),
    ("- a\n- b\n", r"expected a suite as a YAML mapping, got list"),
    ("a: [1, 2\n", r"not valid YAML"),
])
def test_bad_suites_name_file_and_field(tmp_path, text, match):
    with pytest.raises(SuiteError, match=match):
        load_suite(write(tmp_path, text))


def test_directory_rules(tmp_path):
    with pytest.raises(SuiteError, match="no \\*.yaml suite files"):
        load_suites(tmp_path)
    with pytest.raises(SuiteError, match="no such suite"):
        load_suites(tmp_path / "missing.yaml")
    write(tmp_path, GOOD, "a.yaml")
    write(tmp_path, "name: a\n" + GOOD, "b.yaml")
    with pytest.raises(SuiteError, match="suite names must be unique"):
        load_suites(tmp_path)


def test_threshold_semantics():
    t = Threshold.parse("<= 0.25")
    assert t.passes(0.25) and not t.passes(0.3) and not t.passes(float("nan"))
    assert lower_is_better("abs_rel/0-10m") and lower_is_better("ate") and not lower_is_better("map")
