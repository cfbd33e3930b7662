"""Running networks over frames and judging them: the one predictor loop (``loop.py``: ``Evaluator``, the
``Streamer`` that owns a temporal model's memory, ``evaluate``), any dataset scored (``data.py``), clips of
sequences (``sequence.py``) and online 3D tracking over them (``tracking.py``), suites as YAML (``suite.py``)
and their runner (``runner.py``), the regression gate (``gate.py``) and the HTML report (``report.py``,
``charts.py``). See docs/eval.md."""

import lazy_loader as lazy

# The package's public names, each imported from its module on first use (SPEC 1 lazy loading).
__getattr__, __dir__, __all__ = lazy.attach(__name__, submod_attrs={
    "data": ["DatasetEval", "evaluate_dataset"],
    "gate": ["GateRow", "gate"],
    "loop": ["EagerPredictor", "EvalFrame", "Evaluator", "Prediction", "Predictor", "Streamer", "dataset_batches",
        "evaluate", "evaluate_clips", "predictor_of", "with_sequence"],
    "report": ["write_html_report"],
    "runner": ["check_suite", "check_thresholds", "run_suite", "run_to_json", "tracks_objects",
               "unknown_dead_cameras"],
    "sequence": ["clip_indices", "scene_runs"],
    "tracking": ["TRACKED_TASK", "ObjectTracker", "SequenceTrackers", "TrackerOptions", "greedy_assignment"],
    "suite": ["SuiteError", "load_suite", "load_suites", "lower_is_better", "resolve_suite_path", "select_tasks",
              "spread_evenly"],
})
