"""The data engine: mine what the network gets wrong, label it, retrain, gate, ship.

- ``triggers/``   one file per trigger (``@register_trigger``): scores a frame and says why.
- ``pool.py``     the model (checkpoint or ONNX) and the unlabelled pool the miner reads; embeddings.
- ``mine.py``     streams the pool through the model and the triggers, keeps a bounded set of top
                  candidates; ``select.py`` removes near-duplicates (score-weighted greedy k-centre);
                  ``queue.py`` writes the ranked queue (JSONL, optional Parquet, HTML).
- ``label.py``    oracle labelling (the synthetic world's ground truth, priced per label).
- ``autolabel.py`` offline auto-labelling with a teacher over the whole clip (``track.py``: tracking,
                  smoothing, gap filling, light-state voting); ``quality.py`` scores the labels.
- ``vacation.py`` the resumable loop (``stages.py``: mine → label → dataset → train → eval → gate →
                  export → promote; ``pipeline.py``: its YAML; ``history.py``: JSONL + HTML).
"""

import lazy_loader as lazy

# The package's public names, each imported from its module on first use (SPEC 1 lazy loading).
__getattr__, __dir__, __all__ = lazy.attach(__name__, submod_attrs={
    "autolabel": ["AutoLabelConfig", "autolabel_items"],
    "label": ["LabelError", "oracle_items", "write_labelled"],
    "mine": ["MineResult", "build_triggers", "env_world_size", "mine"],
    "pipeline": ["load_pipeline"],
    "pool": ["PoolError", "load_mining_model", "model_tasks", "open_pool"],
    "preflight": ["preflight"],
    "quality": ["autolabel_quality"],
    "queue": ["QueueError", "queue_summary", "read_queue", "write_queue", "write_queue_html"],
    "records": ["describe_current", "read_current", "run_outputs"],
    "triggers.base": ["BatchContext", "FrameContext", "Score", "TRIGGERS", "Trigger", "TriggerError",
        "TriggerOptions", "create_trigger", "parse_trigger_specs", "register_trigger"],
    "vacation": ["Vacation"],
})
