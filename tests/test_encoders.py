"Tests of ssl_mepr.encoders against independent references (the notebook nbs/11_encoders.ipynb holds more, next to the code)."
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st

from ssl_mepr.encoders import (ENCODER_KINDS, Mamba, ReleasedMambaBlock, build_encoder, fused_selective_scan,
                               masked_mean, padding_mask, pool, selective_scan)

FAST = settings(max_examples=25, deadline=None)
SMALL = {"released_mamba": dict(d_inner=4), "mamba": dict(d_state=4), "authors_transformer": dict(num_heads=2),
         "preln_transformer": dict(num_heads=2)}
CORRECTED = {"mamba": dict(d_state=4), "preln_transformer": dict(num_heads=2),
             "authors_transformer": dict(num_heads=2, use_padding_mask=True)}


def reference_mamba(m, x):
    "Mamba one time step at a time: convolution from a window of past inputs, state update, gate, projection."
    w = m.conv1d.weight[:, 0, :]
    window = x.new_zeros(x.shape[0], m.d_inner, m.d_conv)
    h = x.new_zeros(x.shape[0], m.d_inner, m.d_state)
    A = -torch.exp(m.A_log)
    out = []
    for t in range(x.shape[1]):
        xi, z = (x[:, t] @ m.in_proj.weight.T).split(m.d_inner, dim=-1)
        window = torch.cat([window[:, :, 1:], xi[:, :, None]], -1)
        xc = F.silu((window * w).sum(-1) + m.conv1d.bias)
        dt, b, c = (xc @ m.x_proj.weight.T).split([m.dt_rank, m.d_state, m.d_state], dim=-1)
        delta = F.softplus(dt @ m.dt_proj.weight.T + m.dt_proj.bias)
        h = torch.exp(delta[:, :, None] * A) * h + (delta * xc)[:, :, None] * b[:, None, :]
        y = (h * c[:, None, :]).sum(-1) + m.D * xc
        out.append((y * F.silu(z)) @ m.out_proj.weight.T)
    return torch.stack(out, 1)


@pytest.mark.parametrize("scan", ["sequential", "parallel"])
@pytest.mark.parametrize("T", [1, 7, 100])
def test_mamba_matches_step_by_step_reference(scan, T):
    torch.manual_seed(T)
    m = Mamba(16, scan=scan, chunk_size=32).double()
    with torch.no_grad():
        m.dt_proj.bias.add_(1.5)  # larger steps than at initialisation: stronger decays
        m.D.normal_()
        x = torch.randn(2, T, 16, dtype=torch.float64)
        assert (m(x) - reference_mamba(m, x)).abs().max() < 1e-5


def test_mamba_state_dict_has_mamba_ssm_layout():
    shapes = {k: tuple(v.shape) for k, v in Mamba(16).state_dict().items()}
    assert shapes == {"in_proj.weight": (64, 16), "conv1d.weight": (32, 1, 4), "conv1d.bias": (32,),
                      "x_proj.weight": (33, 32), "dt_proj.weight": (32, 1), "dt_proj.bias": (32,),
                      "A_log": (32, 16), "D": (32,), "out_proj.weight": (16, 32)}


@pytest.mark.parametrize("scan", ["sequential", "parallel"])
@pytest.mark.parametrize("t", [0, 5, 31, 32, 50])
def test_mamba_is_causal(scan, t):
    torch.manual_seed(0)
    m = Mamba(8, d_state=4, scan=scan, chunk_size=16).eval()
    x = torch.randn(2, 60, 8)
    x2 = x.clone()
    x2[:, t] = torch.randn(2, 8) * 10
    with torch.no_grad():
        y, y2 = m(x), m(x2)
    assert torch.allclose(y[:, :t], y2[:, :t], atol=1e-6)
    assert not torch.allclose(y[:, t], y2[:, t], atol=1e-4)


def test_scan_modes_agree_in_float32_on_long_sequences():
    "Long sequences with strong decays: no overflow, both PyTorch scans agree."
    g = torch.Generator().manual_seed(0)
    B, T, E, N = 2, 700, 6, 4
    u, b, c = torch.randn(B, T, E, generator=g), torch.randn(B, T, N, generator=g), torch.randn(B, T, N, generator=g)
    delta = F.softplus(torch.randn(B, T, E, generator=g) + 2)
    A, D = -torch.arange(1.0, N + 1).repeat(E, 1) * 8, torch.ones(E)
    y_seq = selective_scan(u, delta, A, b, c, D, mode="sequential", chunk_size=64)
    y_par = selective_scan(u, delta, A, b, c, D, mode="parallel", chunk_size=64)
    assert torch.isfinite(y_seq).all() and torch.allclose(y_seq, y_par, atol=1e-4)


@pytest.mark.skipif(not torch.cuda.is_available() or fused_selective_scan() is None, reason="needs CUDA and mamba_ssm")
def test_fused_kernel_matches_pytorch_scan():
    torch.manual_seed(0)
    m = Mamba(32).cuda()
    x = torch.randn(2, 50, 32, device="cuda")
    with torch.no_grad():
        m.scan = "fused"; y_fused = m(x)
        m.scan = "sequential"; y_torch = m(x)
    assert (y_fused - y_torch).abs().max() < 1e-3


def test_released_block_mixes_nothing_across_time():
    torch.manual_seed(0)
    blk = ReleasedMambaBlock(6, 4, dropout=0.0).eval()
    x = torch.randn(3, 12, 6)
    perm = torch.randperm(12)
    with torch.no_grad():
        assert torch.allclose(blk(x[:, perm]), blk(x)[:, perm], atol=1e-6)
    assert [k.split(".")[0] for k in blk.state_dict()][::2] == ["in_proj", "s_B", "s_C", "out_proj", "norm"]


@pytest.mark.parametrize("kind", ENCODER_KINDS)
def test_shapes_seeding_and_gradients(kind):
    x, lengths = torch.randn(3, 9, 8), torch.tensor([9, 4, 0])
    torch.manual_seed(1); enc = build_encoder(kind, 8, 2, **SMALL[kind])
    torch.manual_seed(1); twin = build_encoder(kind, 8, 2, **SMALL[kind])
    assert all(torch.equal(a, b) for a, b in zip(enc.state_dict().values(), twin.state_dict().values()))
    y = enc(x, lengths)
    assert y.shape == (3, 9, 8) and torch.isfinite(y).all()
    pool(y, lengths, masked=True).square().sum().backward()
    assert [n for n, p in enc.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0] == []


@pytest.mark.parametrize("kind", list(CORRECTED))
def test_padding_invariance_in_corrected_modes(kind):
    torch.manual_seed(2)
    enc = build_encoder(kind, 8, 2, **CORRECTED[kind]).eval()
    x, lengths = torch.randn(3, 10, 8), torch.tensor([10, 3, 0])
    x_long = torch.cat([x, 100 * torch.randn(3, 6, 8)], 1)
    real = ~padding_mask(lengths, 10)
    with torch.no_grad():
        y, y_long = enc(x, lengths), enc(x_long, lengths)
    assert torch.allclose(y_long[:, :10][real], y[real], atol=1e-5)
    assert torch.allclose(masked_mean(y_long, lengths), masked_mean(y, lengths), atol=1e-5)


def test_faithful_authors_transformer_sees_padding():
    torch.manual_seed(2)
    enc = build_encoder("authors_transformer", 8, 1, num_heads=2).eval()
    x, lengths = torch.randn(2, 10, 8), torch.tensor([10, 3])
    with torch.no_grad():
        y, y_long = enc(x, lengths), enc(torch.cat([x, 100 * torch.randn(2, 6, 8)], 1), lengths)
    assert (y_long[1, :3] - y[1, :3]).abs().max() > 0.1


@FAST
@given(st.lists(st.integers(0, 7), min_size=1, max_size=5))
def test_masked_mean_is_mean_of_the_real_prefix(lens):
    x = torch.randn(len(lens), 7, 3, dtype=torch.float64)
    got = masked_mean(x, torch.tensor(lens))
    for i, n in enumerate(lens):
        want = x[i, :n].mean(0) if n else torch.zeros(3, dtype=torch.float64)
        assert torch.allclose(got[i], want)


def test_bad_lengths_are_named():
    x = torch.zeros(2, 5, 3)
    with pytest.raises(ValueError, match="lengths must lie in"): masked_mean(x, torch.tensor([6, 1]))
    with pytest.raises(ValueError, match="1-D tensor of 2"): masked_mean(x, torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match="integers"): padding_mask(torch.tensor([1.0]), 5)
    with pytest.raises(ValueError, match="kind must be one of"): build_encoder("gru", 8, 1)
