"""Multi-task loss balancing: the protocol, options and registry (``base.py``) and one file per strategy
(``uncertainty.py``, ``pcgrad.py``, ``gradnorm.py``; ``per_task.py`` is what the last two share)."""

from hydranet.train.balancing.base import BALANCERS, Balancer, BalancingConfig, GradNormConfig, create_balancer
from hydranet.train.balancing.gradnorm import gradnorm_update
from hydranet.train.balancing.pcgrad import pcgrad_combine

__all__ = ["BALANCERS", "Balancer", "BalancingConfig", "GradNormConfig", "create_balancer", "gradnorm_update",
           "pcgrad_combine"]
