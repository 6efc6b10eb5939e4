import pytest
import torch

from engine.models.dit import DiT, patchify, unpatchify
from engine.models.layers import apply_rope, attention, rope_3d
from engine.models.layout import SegmentLayout
from engine.models.lr_a2v import LRA2V
from engine.presets import get_preset
from ihuman_kernels import block_causal_mask
from tests.factories import lr_batch, lr_conditions, randomize_


def _dit(config_name: str = "tiny") -> DiT:
    c = get_preset(config_name)
    return DiT(
        c.lr_a2v, in_channels=c.latent_channels, out_channels=c.latent_channels, text_dim=16, audio_dim=24
    )


def test_patchify_round_trip_and_frame_major_order() -> None:
    x = torch.randn(2, 3, 4, 6, 8)
    tokens = patchify(x, (1, 2, 2))
    assert tokens.shape == (2, 4 * 3 * 4, 3 * 4)
    assert torch.equal(unpatchify(tokens, (1, 2, 2), 4, (3, 4)), x)
    # Token 12 is the first token of frame 1: the 2x2 patch at the top-left of frame 1.
    assert torch.equal(tokens[:, 12].view(2, 3, 2, 2), x[:, :, 1, :2, :2])


def test_fresh_blocks_are_the_identity() -> None:
    """adaLN-zero: zero gates and zero cross-attention outputs leave the residual path unchanged."""
    dit = _dit()
    layout = SegmentLayout(1, 1, 2)
    frames, L, W = layout.frames, layout.frames * 12, dit.cfg.width
    x = torch.randn(2, L, W)
    time_mod = dit.time_modulation(dit.time_embed(torch.rand(2, frames))).unflatten(-1, (6, -1))
    rope = rope_3d((frames, 3, 4), dit.cfg.rope_split, dit.cfg.rope_theta)
    text = torch.randn(2, 5, W)
    audio = torch.randn(2, 3, 8, W)
    for block in dit.blocks:
        out = block(x, time_mod, rope, (12, 12, 24), text, torch.tensor([5, 2]), audio)
        assert torch.equal(out, x)


def test_fresh_lr_a2v_estimates_the_still_reference() -> None:
    """adaLN-zero: a fresh DiT adds nothing to where the estimate starts."""
    c = get_preset("tiny")
    model = LRA2V(c)
    b = lr_batch(c)
    assert torch.equal(model(b.target, torch.rand(2), lr_conditions(b)), b.still.expand_as(b.target))


def test_block_causal_context_ignores_the_noisy_frames() -> None:
    """The context's outputs do not depend on the new frames (what makes its K/V cacheable)."""
    c = get_preset("tiny")
    model = randomize_(LRA2V(c))
    b = lr_batch(c, batch=1)
    cond = lr_conditions(b)
    t = torch.tensor([0.3])
    with torch.no_grad():
        a = model(b.target, t, cond, all_frames=True)
        z = model(torch.randn_like(b.target), t, cond, all_frames=True)
    ctx = c.segment.prefix_latents + c.segment.motion_latents
    torch.testing.assert_close(a[:, :, :ctx], z[:, :, :ctx])
    assert not torch.allclose(a[:, :, ctx:], z[:, :, ctx:])


def test_block_causal_mask_groups() -> None:
    m = block_causal_mask([1, 2, 1])
    expected = torch.tensor([[1, 0, 0, 0], [1, 1, 1, 0], [1, 1, 1, 0], [1, 1, 1, 1]], dtype=torch.bool)
    assert torch.equal(m, expected)


@pytest.mark.parametrize(("groups", "kv_lens"), [(None, None), ((3, 5), None), (None, [8, 4])])
def test_attention_matches_explicit_softmax(
    groups: tuple[int, ...] | None, kv_lens: list[int] | None
) -> None:
    q, k, v = (torch.randn(2, 3, 8, 16, dtype=torch.float64) for _ in range(3))
    lens = None if kv_lens is None else torch.tensor(kv_lens)
    out = attention(q, k, v, groups=groups, kv_lens=lens)
    scores = q @ k.transpose(-1, -2) / 16**0.5
    allowed = torch.ones(2, 1, 8, 8, dtype=torch.bool)
    if groups is not None:
        allowed = allowed & block_causal_mask(groups)
    if lens is not None:
        allowed = allowed & (torch.arange(8)[None, :] < lens[:, None])[:, None, None, :]
    ref = scores.masked_fill(~allowed, float("-inf")).softmax(-1) @ v
    torch.testing.assert_close(out, ref)


def test_rope_scores_depend_only_on_relative_position() -> None:
    """<R(p) q, R(p') k> depends on p - p' along every axis."""
    split, theta = (4, 6, 6), 10_000.0
    cos, sin = rope_3d((4, 5, 6), split, theta)
    grid = torch.arange(4 * 5 * 6).view(4, 5, 6)
    q, k = torch.randn(16), torch.randn(16)

    def score(a: tuple[int, int, int], b: tuple[int, int, int]) -> float:
        ia, ib = grid[a], grid[b]
        qa = apply_rope(q.view(1, 1, 1, 16), cos[ia : ia + 1], sin[ia : ia + 1])
        kb = apply_rope(k.view(1, 1, 1, 16), cos[ib : ib + 1], sin[ib : ib + 1])
        return float((qa * kb).sum())

    assert score((0, 1, 2), (1, 3, 0)) == pytest.approx(score((2, 2, 4), (3, 4, 2)), abs=1e-4)
    assert score((0, 1, 2), (1, 3, 0)) != pytest.approx(score((0, 1, 2), (2, 3, 0)), abs=1e-4)
