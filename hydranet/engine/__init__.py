"""The data engine: mine what the network gets wrong, label it, retrain, gate, ship.

- ``triggers/``  one file per trigger (``@register_trigger``): scores a frame and says why.
- ``mine.py``    streams an unlabelled pool through a model and the triggers, keeps a bounded set
                 of top candidates, removes near-duplicates (greedy k-centre), writes a ranked queue.
- ``label.py``   oracle labelling (the synthetic world's ground truth, priced per label).
- ``autolabel.py`` offline auto-labelling with a teacher over the whole clip (tracking, smoothing, voting).
- ``vacation.py`` the resumable loop: mine → label → dataset → train → eval → gate → export → promote.
"""
