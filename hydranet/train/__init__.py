"""Multi-task training: config (``config``), per-task datasets and the task scheduler
(``data``, ``scheduler``), loss balancing correct under DDP (``balancing``), the loop (``trainer``,
``optim``, ``logging``, ``evaluate``), torchrun integration (``distributed``), atomic no-pickle
checkpoints and ``load_model`` (``checkpoint``), the ``hydranet train`` entry (``run``) and the demo
(``demo``, ``report``). See docs/train.md. Submodules are imported explicitly (no heavy imports here).
"""
