import math

import torch

from sync_classifier.loss import offset_accuracy, sync_infonce


def test_uniform_scores_give_log_k_per_direction():
    phi = torch.zeros(2, 21, 21)
    loss, m = sync_infonce(phi, temperature=0.1)
    assert math.isclose(loss.item(), 2 * math.log(21), rel_tol=1e-5)


def test_diagonal_scores_give_low_loss_and_full_accuracy():
    phi = torch.eye(21).repeat(3, 1, 1) * 2.0
    loss, m = sync_infonce(phi, temperature=0.1)
    assert loss.item() < 1e-6 * 1e3
    assert m["acc_a2v"] == 1.0 and m["acc_v2a"] == 1.0


def test_a2v_and_v2a_are_rows_and_columns():
    k = 31
    phi = torch.zeros(1, k, k)
    phi[0, :, 0] = 1.0  # every audio picks video 0; every video column picks audio argmax (first max = 0)
    acc = offset_accuracy(phi, tolerance=5)
    assert math.isclose(acc["acc_a2v"], 6 / 31, rel_tol=1e-6)  # rows 0..5 are within 5 of column 0
    assert math.isclose(acc["acc_v2a"], 6 / 31, rel_tol=1e-6)


def test_loss_gradient_pushes_diagonal_up():
    phi = torch.zeros(1, 5, 5, requires_grad=True)
    loss, _ = sync_infonce(phi, temperature=0.1)
    loss.backward()
    g = phi.grad[0]
    assert torch.all(torch.diagonal(g) < 0)
    assert torch.all(g[~torch.eye(5, dtype=torch.bool)] > 0)


def test_easy_negatives_never_share_a_softmax_with_hard_ones():
    from sync_classifier.loss import easy_infonce

    b, k = 3, 4
    phi = torch.zeros(b * k, b * k, requires_grad=True)
    loss, m = easy_infonce(phi, b, k, temperature=0.1)
    # candidates per row: the partner + (b - 1) * k clips of other instances
    assert math.isclose(loss.item(), 2 * math.log(1 + (b - 1) * k), rel_tol=1e-5)
    loss.backward()
    g = phi.grad
    inst = torch.arange(b * k) // k
    hard = (inst[:, None] == inst[None, :]) & ~torch.eye(b * k, dtype=torch.bool)
    assert torch.all(g[hard] == 0)  # shifted clips of the same instance get no gradient
    assert torch.all(torch.diagonal(g) < 0) and torch.all(g[~hard & ~torch.eye(b * k, dtype=torch.bool)] > 0)
    # high scores on hard negatives do not change the loss at all
    phi2 = torch.zeros(b * k, b * k)
    phi2[hard] = 100.0
    assert math.isclose(easy_infonce(phi2, b, k)[0].item(), loss.item(), rel_tol=1e-6)
