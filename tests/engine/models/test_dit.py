import dataclasses

import pytest
import torch

from engine.config import Config
from engine.exceptions import InputShapeError
from engine.flow import Guidance
from engine.models.dit import DiT, patchify, unpatchify
from engine.models.layers import apply_rope, attention, rope_3d
from engine.models.layout import SegmentLayout
from engine.models.lr_a2v import CONDITIONS, LRA2V
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
        out, _ = block(x, time_mod, rope, (12, 12, 24), text, torch.tensor([5, 2]), audio)
        assert torch.equal(out, x)


def test_fresh_lr_a2v_estimates_the_still_reference() -> None:
    """adaLN-zero: a fresh DiT adds nothing to where the estimate starts."""
    c = get_preset("tiny")
    model = LRA2V(c)
    b = lr_batch(c)
    assert torch.equal(model(b.target, torch.rand(2), lr_conditions(b)), b.still.expand_as(b.target))


def test_context_tokens_carry_the_reference_and_the_last_context_frame() -> None:
    """Every new frame's tokens get the reference and the last clean frame before them."""
    c = get_preset("tiny")
    model = randomize_(LRA2V(c))
    cond = lr_conditions(lr_batch(c, batch=1, motion=2))
    with torch.no_grad():
        tokens = model.context_tokens(cond, 2)
        per_frame = tokens.shape[1] // 2
        assert torch.equal(tokens[:, :per_frame], tokens[:, per_frame:])
        for frame, changes in ((0, False), (1, True)):
            motion = cond.motion.clone()
            motion[:, :, frame] += 1
            moved = model.context_tokens(dataclasses.replace(cond, motion=motion), 2)
            assert torch.equal(moved, tokens) != changes
        # At a stream's start (no motion frames) the reference stands in for the last frame.
        start = dataclasses.replace(cond, motion=cond.motion[:, :, :0])
        pair = torch.cat([cond.prefix, cond.prefix], dim=1)
        torch.testing.assert_close(
            model.context_tokens(start, 1), model.context_embed(patchify(pair, c.lr_a2v.patch))
        )


def test_bundles_made_before_the_context_tokens_load_without_them() -> None:
    """A bundle's config.json from before the field: LR-A2V without the map, estimates as then."""
    document = dataclasses.asdict(get_preset("tiny"))
    del document["segment"]["lr_context_tokens"]
    config = Config.from_dict(document)
    model = LRA2V(config)
    assert not config.segment.lr_context_tokens and model.context_embed is None
    assert not any(name.startswith("context_embed") for name in model.state_dict())
    b = lr_batch(config)
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


@pytest.mark.parametrize("motion", [0, 1, 2])
def test_a_cached_context_gives_the_same_estimates(motion: int) -> None:
    """The context's keys/values computed once stand in for the whole sequence at every step."""
    c = get_preset("tiny")
    model = randomize_(LRA2V(c), std=0.1).double()
    b = lr_batch(c, batch=2, motion=motion)
    cond = dataclasses.replace(
        lr_conditions(b), **{f: getattr(b, f).double() for f in ("prefix", "motion", "audio", "still")}
    )
    with torch.no_grad():
        context = model.context_kv(cond, b.target.shape[2])
        for t in (0.0, 0.6):
            z, times = (
                torch.randn_like(b.target, dtype=torch.float64),
                torch.full((2,), t, dtype=torch.float64),
            )
            torch.testing.assert_close(model(z, times, cond, context=context), model(z, times, cond))
        # Guided (reference, audio, text branches), three Euler steps: the same velocities.
        z = torch.randn_like(b.target, dtype=torch.float64)
        guidance = Guidance(CONDITIONS, (1.5, 2.0, 2.0))
        plain, cached = model.velocity(cond, guidance), model.velocity(cond, guidance, cache_context=True)
        for t in (0.0, 0.3, 0.7):
            times = torch.full((2,), t, dtype=torch.float64)
            torch.testing.assert_close(cached(z, times), plain(z, times))
    with pytest.raises(InputShapeError, match="all_frames"):
        model(b.target.double(), torch.zeros(2, dtype=torch.float64), cond, all_frames=True, context=context)


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
