import math

import pytest
import torch
import torch.nn.functional as F

from featmatch.errors import UsageError
from featmatch.train.losses.xfeat import (dual_softmax_loss, fine_offset_loss, keypoint_distillation_loss,
                                          keypoint_labels, reliability_loss, xfeat_total, XFeatLossWeights)


def test_dual_softmax_hand_computed():
    f0 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    f1 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    loss, conf = dual_softmax_loss(f0, f1, temperature=1.0)
    # each row: softmax([1, 0]) -> p = e / (e + 1); two directions of mean NLL
    p = math.e / (math.e + 1)
    assert loss.item() == pytest.approx(-2 * math.log(p), rel=1e-6)
    assert torch.allclose(conf, torch.full((2,), p * p))
    with pytest.raises(UsageError):
        dual_softmax_loss(f0, f1[:1])


def test_dual_softmax_gradients_and_no_grad_in_conf():
    f0 = torch.randn(6, 4, requires_grad=True)
    f1 = torch.randn(6, 4, requires_grad=True)
    loss, conf = dual_softmax_loss(f0, f1)
    loss.backward()
    assert f0.grad.abs().sum() > 0 and f1.grad.abs().sum() > 0 and not conf.requires_grad


def test_reliability_gradient_only_into_r():
    f0 = torch.randn(5, 4, requires_grad=True)
    f1 = torch.randn(5, 4, requires_grad=True)
    _, conf = dual_softmax_loss(f0, f1)
    r0 = torch.full((5,), 0.5, requires_grad=True)
    r1 = torch.full((5,), 0.5, requires_grad=True)
    l = reliability_loss(r0, r1, conf)
    l.backward()
    assert f0.grad is None and r0.grad is not None
    assert l.item() == pytest.approx(2 * (0.5 - conf).abs().mean().item(), rel=1e-6)


def test_fine_offset_loss_values():
    logits = torch.zeros(3, 64)
    labels = torch.tensor([0, 10, 63])
    assert fine_offset_loss(logits, labels).item() == pytest.approx(math.log(64))
    logits[0, 0] = 100.0
    w = torch.tensor([1.0, 0.0, 0.0])
    assert fine_offset_loss(logits, labels, w).item() == pytest.approx(0.0, abs=1e-6)


def test_keypoint_labels_and_distillation():
    kp = [torch.tensor([[9.0, 2.0], [0.2, 0.4], [100.0, 100.0]])]  # last one outside
    lab = keypoint_labels(kp, (2, 3))
    assert lab.shape == (1, 2, 3)
    assert lab[0, 0, 1].item() == 2 * 8 + 1 and lab[0, 0, 0].item() == 0
    assert (lab == 64).sum().item() == 4
    logits = torch.zeros(1, 65, 2, 3, requires_grad=True)
    loss = keypoint_distillation_loss(logits, lab)
    assert loss.item() == pytest.approx(math.log(65), rel=1e-6)  # uniform logits: every cell costs log 65
    loss.backward()
    assert logits.grad.abs().sum() > 0
    # perfect logits give ~0 loss
    good = F.one_hot(lab, 65).permute(0, 3, 1, 2).float() * 50
    assert keypoint_distillation_loss(good, lab).item() < 1e-6


def test_total_uses_weights():
    parts = {"descriptors": torch.tensor(1.0), "reliability": torch.tensor(1.0), "fine": torch.tensor(1.0),
             "keypoints": torch.tensor(1.0)}
    assert xfeat_total(parts, XFeatLossWeights(1, 2, 3, 4)).item() == 10.0
