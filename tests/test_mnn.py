import pytest
import torch
import torch.nn.functional as F

from featmatch.errors import UsageError
from featmatch.ops.mnn import mutual_nn, mutual_nn_batched
from featmatch.ops.nms import nms_points


def test_mutual_nn_hand_case():
    d0 = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.7071, 0.7071]])
    d1 = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    i0, i1, s = mutual_nn(d0, d1)
    assert i0.tolist() == [0, 1] and i1.tolist() == [1, 0] and torch.allclose(s, torch.ones(2))
    i0, _, _ = mutual_nn(d0, d1, mutual=False)
    assert i0.tolist() == [0, 1, 2]
    assert len(mutual_nn(d0, d1, min_score=1.5)[0]) == 0


def test_ratio_test_and_l2():
    # row 0 lies halfway between d1[0] and d1[1] (ratio ~1): ambiguous, rejected
    d0 = F.normalize(torch.tensor([[1.0, 0.07], [0.0, 1.0]]), dim=1)
    d1 = F.normalize(torch.tensor([[1.0, 0.0], [0.99, 0.141], [0.0, 1.0]]), dim=1)
    i0, i1, _ = mutual_nn(d0, d1, ratio=0.8)
    assert i0.tolist() == [1] and i1.tolist() == [2]
    assert mutual_nn(d0, d1, ratio=None)[0].tolist() == [0, 1]
    i0, i1, s = mutual_nn(d0, d1, metric="l2", max_distance=0.01)
    assert i0.tolist() == [1] and (s <= 0).all()


def test_hamming_binary():
    d0 = torch.tensor([[0b11110000], [0b00001111]], dtype=torch.uint8)
    d1 = torch.tensor([[0b00001110], [0b11110001]], dtype=torch.uint8)
    i0, i1, s = mutual_nn(d0, d1)
    assert i0.tolist() == [0, 1] and i1.tolist() == [1, 0] and s.tolist() == [-1.0, -1.0]


def test_batched_equals_single_and_masks():
    torch.manual_seed(0)
    a, b = F.normalize(torch.randn(2, 30, 8), dim=-1), F.normalize(torch.randn(2, 25, 8), dim=-1)
    m0, _ = mutual_nn_batched(a, b)
    for k in range(2):
        i0, i1, _ = mutual_nn(a[k], b[k])
        assert (m0[k] >= 0).nonzero()[:, 0].tolist() == i0.tolist()
    mask1 = torch.ones(2, 25, dtype=torch.bool)
    mask1[:, 10:] = False
    m0, _ = mutual_nn_batched(a, b, mask1=mask1)
    assert int(m0.max()) < 10


def test_empty_and_bad_shapes():
    i0, i1, s = mutual_nn(torch.zeros(0, 4), torch.randn(5, 4))
    assert len(i0) == len(i1) == len(s) == 0
    with pytest.raises(UsageError):
        mutual_nn(torch.zeros(3, 4), torch.zeros(3, 5))


def test_nms_points_order_and_padding():
    s = torch.zeros(2, 1, 12, 12)
    s[0, 0, 2, 3] = 1.0
    s[0, 0, 9, 9] = 0.5
    s[0, 0, 9, 10] = 0.4  # suppressed by its neighbour
    s[1, 0, 5, 5] = 0.9
    pos, mask = nms_points(s, 5, 0.1)
    assert pos.shape == (2, 2, 2)
    assert pos[0].tolist() == [[3, 2], [9, 9]] and mask.tolist() == [[True, True], [True, False]]
