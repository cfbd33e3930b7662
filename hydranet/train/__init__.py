"""Multi-task training: config (``config``), per-task datasets and the task scheduler
(``data``, ``scheduler``), loss balancing correct under DDP (``balancing``), the loop (``trainer``,
``optim``, ``logging``, ``evaluate``), torchrun integration (``distributed``), the ``hydranet train``
entry (``run``) and the demo (``demo``, ``report``). Checkpoint I/O is ``hydranet.checkpoint``.
See docs/train.md. Submodules are imported explicitly (no heavy imports here).
"""
