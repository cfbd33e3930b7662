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
