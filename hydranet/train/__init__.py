"""Multi-task training: config (``config``), per-task datasets and the task scheduler
(``data``, ``scheduler``), loss balancing correct under DDP (``balancing``), the loop (``trainer``,
``optim``, ``logging``, ``training_state``), clips for the video memory (``clips``), sub-graph training and
the feature cache (``subgraph``, ``feature_cache*``), torchrun integration (``distributed``), the
``hydranet train`` entry (``run``) and the demo (``demo``, ``report``). Checkpoint I/O is ``hydranet.checkpoint``;
evaluation is the one predictor loop of ``hydranet.eval``. See docs/train.md.
"""

import lazy_loader as lazy

# The package's public names, each imported from its module on first use (SPEC 1 lazy loading).
__getattr__, __dir__, __all__ = lazy.attach(__name__, submod_attrs={
    "balancing": ["BALANCERS", "Balancer", "BalancingConfig"],
    "config": ["Config", "ConfigError", "apply_overrides", "config_from_dict", "config_to_dict", "load_config",
               "with_worlds_inline"],
    "data": ["open_source", "world_from_file"],
    "demo": ["BUDGET_S", "default_demo_config", "run_demo"],
    "distributed": ["DeviceError", "exit_torchrun_worker", "resolve_device", "shutdown"],
    "feature_cache_format": ["CacheError", "MANIFEST"],
    "feature_cache_writer": ["write_cache"],
    "interrupt": ["TrainingInterrupted"],
    "merge": ["MergeError", "build_merged", "plan_merge", "save_merged"],
    "run": ["RunLockedError", "default_run_dir", "run_training"],
    "subgraph": ["load_train_config", "run_subgraph"],
    "trainer": ["NonFiniteTrainingError"],
})
