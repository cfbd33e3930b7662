"""Loss-balancing strategies: the math on hand cases, and their behaviour inside the trainer."""

import torch
from torch import nn

from hydranet.train.balancing import create_balancer, gradnorm_update, pcgrad_combine
from hydranet.train.config import BalancingConfig


def test_pcgrad_projects_conflicting_gradients():
    g = torch.tensor([[1.0, 0.0], [-1.0, 1.0]])  # dot = -1: conflict
    out = pcgrad_combine(g, torch.Generator().manual_seed(0))
    # g1 -> g1 - (g1·g2/|g2|²) g2 = [0.5, 0.5];  g2 -> g2 - (g2·g1/|g1|²) g1 = [0, 1]
    torch.testing.assert_close(out, torch.tensor([0.5, 1.5]))
    assert torch.dot(torch.tensor([0.5, 0.5]), g[1]) == 0
    agree = torch.tensor([[1.0, 0.0], [1.0, 1.0]])  # no conflict: plain sum
    torch.testing.assert_close(pcgrad_combine(agree), agree.sum(0))


def test_gradnorm_moves_weights_toward_equal_gradient_norms_and_rates():
    w, init = torch.ones(2), torch.full((2,), float("nan"))
    # Equal training rates, task 0's gradient 10x larger: its weight must drop, task 1's rise.
    new = gradnorm_update(w, init, torch.tensor([1.0, 1.0]), torch.tensor([10.0, 1.0]), [0, 1], 1.5, 0.01)
    assert new[0] < 1 < new[1] and abs(float(new.sum()) - 2) < 1e-6
    torch.testing.assert_close(init, torch.tensor([1.0, 1.0]))  # first losses recorded as L(0)
    # Equal gradient norms, task 0 trains slower (loss ratio 1 vs 0.25): its weight must rise.
    new = gradnorm_update(w, init, torch.tensor([1.0, 0.25]), torch.tensor([1.0, 1.0]), [0, 1], 1.5, 0.01)
    assert new[0] > 1 > new[1]
    # Only active tasks move; an inactive task's weight is untouched.
    new = gradnorm_update(torch.ones(3), torch.ones(3), torch.ones(3), torch.tensor([5.0, 1.0, 9.0]), [0, 1], 1.5, 0.1)
    assert new[2] == 1 and abs(float(new[:2].sum()) - 2) < 1e-6


def test_uncertainty_weighting_gradients():
    p = nn.Parameter(torch.tensor(2.0))
    bal = create_balancer(BalancingConfig(kind="uncertainty"), ["a", "b"], nn.Linear(1, 1), [p])
    with torch.no_grad():
        bal.log_vars.copy_(torch.tensor([0.5, -1.0]))
    la, lb = 3 * p, p * p  # L_a = 6, L_b = 4 at p = 2
    bal.backward({"a": la, "b": lb}, scale=1.0)
    s = torch.tensor([0.5, -1.0])
    # d/ds (exp(-s) L + s) = 1 - exp(-s) L
    torch.testing.assert_close(bal.log_vars.grad, 1 - torch.exp(-s) * torch.tensor([6.0, 4.0]))
    # d/dp = exp(-s_a)·3 + exp(-s_b)·2p
    torch.testing.assert_close(p.grad, torch.exp(-s[0]) * 3 + torch.exp(-s[1]) * 4)
    assert bal.weights()["b"] > bal.weights()["a"]


def test_static_weights_and_unknown_task():
    p = nn.Parameter(torch.tensor(1.0))
    bal = create_balancer(BalancingConfig(weights={"a": 2.0}), ["a", "b"], nn.Linear(1, 1), [p])
    bal.backward({"a": p * 1.0, "b": p * 1.0}, scale=0.5)
    torch.testing.assert_close(p.grad, torch.tensor(1.5))
    try:
        create_balancer(BalancingConfig(weights={"zzz": 1.0}), ["a"], nn.Linear(1, 1), [p])
    except ValueError as e:
        assert "train.balancing.weights: unknown task(s) ['zzz']" in str(e)
    else:
        raise AssertionError("unknown task accepted")


def test_pcgrad_and_gradnorm_train_the_tiny_model(tmp_path):
    from train_testkit import make_trainer

    for kind in ("pcgrad", "gradnorm"):
        tr = make_trainer(tmp_path / kind, steps=4, balancing={"kind": kind, "shared": ["trunk", "neck"]})
        before = {k: v.clone() for k, v in tr.model.state_dict().items()}
        tr.fit()
        after = tr.model.state_dict()
        assert all(not torch.equal(before[k], after[k]) for k in before if k.startswith(("trunk.0", "heads.")))
        w = tr.balancer.weights()
        assert abs(sum(w.values()) - 2) < 1e-5
        if kind == "gradnorm":
            assert w["tiny_depth"] != w["tiny_drivable"]
