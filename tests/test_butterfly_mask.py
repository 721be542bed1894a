"""Butterfly sparsity generators of ``longseq.nn.butterfly`` against their definitions."""

import pytest
import torch

from longseq.nn.butterfly import (
    butterfly_factor_mask,
    butterfly_neighbors,
    flat_block_butterfly_layout,
    flat_butterfly_mask,
)


def factor_by_definition(n, s):
    """Non-zeros at (j, j), (j, j+s), (j+s, j), (j+s, j+s) for j mod 2s < s."""
    m = torch.zeros(n, n, dtype=torch.bool)
    for j in range(n):
        if j % (2 * s) < s:
            for a, b in [(j, j), (j, j + s), (j + s, j), (j + s, j + s)]:
                m[a, b] = True
    return m


@pytest.mark.parametrize("n", [2, 8, 32])
def test_factor_matches_definition_and_product_support(n):
    for s in [2**i for i in range(n.bit_length() - 1)]:
        assert torch.equal(butterfly_factor_mask(n, s), factor_by_definition(n, s))
    # the product of all log2(n) factors is dense (a full butterfly reaches every index)
    prod = torch.eye(n, dtype=torch.float64)
    for s in [2**i for i in range(n.bit_length() - 1)]:
        prod = prod @ factor_by_definition(n, s).double()
    assert (prod > 0).all()


@pytest.mark.parametrize("n,f", [(16, 2), (16, 4), (16, None), (13, 3), (1, None)])
def test_flat_butterfly_is_union_of_factors(n, f):
    size = 1 << max(0, (n - 1).bit_length())
    k = f if f is not None else (n - 1).bit_length()
    ref = torch.eye(size, dtype=torch.bool)
    for i in range(k):
        ref |= factor_by_definition(size, 2**i)
    mask = flat_butterfly_mask(n, f)
    assert torch.equal(mask, ref[:n, :n])
    assert torch.equal(mask, mask.T)
    if n == 16 and f == 2:
        assert mask.sum(1).tolist() == [3] * 16  # 3 non-zeros per row: 18.75% density
    # neighbour lists give exactly the rows of the mask
    nb = butterfly_neighbors(n, f)
    for i in range(n):
        assert set(nb[i].tolist()) == set(mask[i].nonzero().flatten().tolist())


def test_flat_block_layout_pixelfly_defaults():
    # square 512 x 512, coarse 16 x 16, block 32 = the coarse cell: the layout is the coarse mask
    layout = flat_block_butterfly_layout(512, 512, butterfly_size=16, n_factors=2, block=32)
    assert torch.equal(layout, flat_butterfly_mask(16, 2))
    # rectangular, block smaller than a cell: each cell becomes a 2 x 4 group of blocks
    layout = flat_block_butterfly_layout(512, 1024, butterfly_size=16, n_factors=2, block=16)
    assert layout.shape == (32, 64)
    assert torch.equal(layout, flat_butterfly_mask(16, 2).repeat_interleave(2, 0).repeat_interleave(4, 1))
    # global rows/cols switch on the blocks they touch
    layout = flat_block_butterfly_layout(256, 256, butterfly_size=8, n_factors=1, block=16, global_size=20)
    assert layout[:2].all() and layout[:, :2].all() and not layout[2:, 2:].all()


def test_errors():
    with pytest.raises(ValueError, match="stride"):
        butterfly_factor_mask(8, 3)
    with pytest.raises(ValueError, match="n_factors"):
        flat_butterfly_mask(8, 0)
    with pytest.raises(ValueError, match="butterfly_size"):
        flat_block_butterfly_layout(64, 64, butterfly_size=12)
    with pytest.raises(ValueError, match="n_factors"):
        flat_block_butterfly_layout(64, 64, butterfly_size=16, n_factors=5)
    with pytest.raises(ValueError, match="in_features"):
        flat_block_butterfly_layout(64, 40, butterfly_size=16, block=8)
