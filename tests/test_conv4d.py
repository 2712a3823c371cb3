"""Conv4d against a direct computation; symmetric NC; mutual filter."""

import pytest
import torch

from featmatch.ops import conv4d as c4
from featmatch.ops.conv4d import Conv4d, conv4d, conv4d_reference, from_reference_layout, to_reference_layout
from featmatch.models.drcnet.ncons import NeighConsensus, correlation_4d, mutual_matching


@pytest.mark.parametrize("shape,cout,k", [((2, 2, 3, 4, 3, 4), 3, 3), ((1, 1, 3, 3, 3, 3), 2, 3),
                                          ((1, 2, 5, 4, 4, 5), 1, 5), ((1, 2, 2, 3, 2, 2), 3, 1)])
def test_conv4d_matches_direct_sum(shape, cout, k):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(*shape, generator=g, dtype=torch.float64)
    w = torch.randn(cout, shape[1], k, k, k, k, generator=g, dtype=torch.float64)
    b = torch.randn(cout, generator=g, dtype=torch.float64)
    torch.testing.assert_close(conv4d(x, w, b), conv4d_reference(x, w, b), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(conv4d(x, w), conv4d_reference(x, w), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("shape,cout,k", [((2, 3, 4, 5, 3, 4), 1, 3), ((1, 4, 6, 3, 4, 3), 2, 3),
                                          ((1, 16, 5, 4, 3, 4), 1, 3), ((1, 2, 5, 4, 4, 5), 1, 5),
                                          ((1, 3, 2, 3, 2, 2), 2, 1)])
@pytest.mark.parametrize("path", ["stacked_input", "stacked_output", "slices"])
def test_every_conv4d_arrangement_matches_direct_sum(shape, cout, k, path):
    """The three arrangements conv4d picks by shape, each forced on shapes it would not pick,
    with tiny row blocks (several blocks, a partial last one) for the stacked-output one."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(*shape, generator=g, dtype=torch.float64)
    w = torch.randn(cout, shape[1], k, k, k, k, generator=g, dtype=torch.float64)
    b = torch.randn(cout, generator=g, dtype=torch.float64)
    ref = conv4d_reference(x, w, b)
    with torch.no_grad():
        if path == "stacked_input":
            got = c4._conv4d_stacked_input(x, w, b)
        elif path == "stacked_output":
            per_row = shape[0] * shape[3] * k * k * cout * shape[4] * shape[5]
            got = c4._conv4d_stacked_output(x, w, b, max_elements=2 * per_row)
        else:
            got = c4._conv4d_slices(x, w, b)
    torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-10)


def test_conv4d_with_autograd_never_takes_the_in_place_arrangement(monkeypatch):
    x = torch.randn(1, 3, 3, 2, 2, 2, dtype=torch.float64, requires_grad=True)  # 16 -> 1 like, small
    w = torch.randn(1, 3, 3, 3, 3, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(1, dtype=torch.float64, requires_grad=True)
    used = []
    real = c4._conv4d_stacked_output
    monkeypatch.setattr(c4, "_conv4d_stacked_output", lambda *a, **kw: used.append(1) or real(*a, **kw))
    assert torch.autograd.gradcheck(conv4d, (x, w, b))
    assert not used
    with torch.no_grad():
        conv4d(x, w, b)
    assert used  # inference on the same shape does take it


def test_conv4d_single_tap_is_a_shift():
    # a kernel with one non-zero tap at offset (+1, 0, -1, 0) shifts the input: out[i] = x[i + off]
    x = torch.arange(4 * 3 * 4 * 3, dtype=torch.float64).view(1, 1, 4, 3, 4, 3)
    w = torch.zeros(1, 1, 3, 3, 3, 3, dtype=torch.float64)
    w[0, 0, 2, 1, 0, 1] = 1.0
    out = conv4d(x, w)
    assert out[0, 0, 1, 1, 2, 1] == x[0, 0, 2, 1, 1, 1]
    assert out[0, 0, 3, 1, 2, 1] == 0  # zero padding past the end of the first axis
    assert out[0, 0, 1, 1, 0, 1] == 0  # and before the start of the third


def test_conv4d_gradients():
    x = torch.randn(1, 1, 3, 2, 2, 2, dtype=torch.float64, requires_grad=True)
    w = torch.randn(1, 1, 3, 3, 3, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(1, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(conv4d, (x, w, b))


def test_conv4d_bad_input():
    with pytest.raises(ValueError, match="B, C, H1"):
        conv4d(torch.zeros(1, 1, 3, 3), torch.zeros(1, 1, 3, 3, 3, 3))
    with pytest.raises(ValueError, match="odd"):
        conv4d(torch.zeros(1, 1, 3, 3, 3, 3), torch.zeros(1, 1, 2, 2, 2, 2))
    with pytest.raises(ValueError, match="channels"):
        conv4d(torch.zeros(1, 2, 3, 3, 3, 3), torch.zeros(1, 1, 3, 3, 3, 3))


def test_reference_layout_roundtrip():
    w = torch.randn(16, 1, 3, 3, 3, 3)
    r = to_reference_layout(w)
    assert r.shape == (3, 16, 1, 3, 3, 3)
    assert torch.equal(from_reference_layout(r), w)


def test_symmetric_nc_is_symmetric():
    torch.manual_seed(0)
    nc = NeighConsensus((3, 3), (16, 1)).double()
    x = torch.rand(1, 1, 3, 4, 3, 4, dtype=torch.float64)
    y = nc(x)
    assert y.shape == x.shape and bool((y >= 0).all())
    # swapping A and B in the input swaps them in the output
    yt = nc(x.permute(0, 1, 4, 5, 2, 3))
    torch.testing.assert_close(yt, y.permute(0, 1, 4, 5, 2, 3))
    # and equals net(x) + P(net(P(x))) computed with the direct 4D sum
    def net(t):
        for layer in nc.conv:
            t = conv4d_reference(t, layer.weight, layer.bias) if isinstance(layer, Conv4d) else torch.relu(t)
        return t
    torch.testing.assert_close(y, net(x) + net(x.permute(0, 1, 4, 5, 2, 3)).permute(0, 1, 4, 5, 2, 3))


def test_mutual_matching_and_correlation():
    fa = torch.nn.functional.normalize(torch.randn(2, 8, 3, 4), dim=1)
    fb = torch.nn.functional.normalize(torch.randn(2, 8, 2, 5), dim=1)
    c = correlation_4d(fa, fb)
    assert c.shape == (2, 1, 3, 4, 2, 5)
    torch.testing.assert_close(c[1, 0, 2, 1, 1, 3], (fa[1, :, 2, 1] * fb[1, :, 1, 3]).sum())
    m = mutual_matching(c.clamp_min(0))
    flat = c.clamp_min(0).view(2, 12, 10)
    ra = flat / (flat.max(2, keepdim=True)[0] + 1e-5)
    rb = flat / (flat.max(1, keepdim=True)[0] + 1e-5)
    torch.testing.assert_close(m.view(2, 12, 10), flat * (ra * rb))
