"""Clips on disk and the datasets reading them: round trip, resume, aligned windows."""

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.config import TimeBase
from engine.data.clip import make_clip
from engine.data.dataset import ClipGroupedSampler, ClipWindows, ProceduralWindows, Shuffled, WindowSpec
from engine.data.make import make_dataset
from engine.data.motion import motion_from_audio
from engine.data.store import DataError, clip_dir, list_clips, read_clip, write_clip
from engine.exceptions import ConfigError

TIME = TimeBase()
FIXTURES = Path(__file__).parents[2] / "fixtures" / "procedural"


def test_clip_round_trip(tmp_path: Path) -> None:
    clip = make_clip(11, 1.0, 160, 96)
    folder = write_clip(clip, tmp_path, TIME.fps, TIME.sample_rate)
    back = read_clip(folder)
    assert back.frames.shape == clip.frames.shape == (25, 3, 96, 160)
    error = (back.frames.float() - clip.frames.float()).abs().mean()
    assert error < 2.0, float(error)  # CRF 12, 4:4:4: visually lossless
    assert np.abs(back.audio - clip.audio).max() <= 1 / 32767 + 1e-6
    assert torch.equal(back.points, clip.points)
    assert torch.equal(back.mouth_open, clip.mouth_open)
    assert back.meta["identity"] == 11


def test_make_resumes_and_ignores_partial_clips(tmp_path: Path) -> None:
    seen: list[int] = []
    first = make_dataset(tmp_path, [1, 2], 0.4, 64, 48, workers=1, on_clip=seen.append)
    assert (first.made, first.skipped) == (2, 0)
    assert sorted(seen) == [1, 2]
    # A run killed mid-clip leaves a .partial folder: it is not a clip and is redone.
    (tmp_path / "clip_000003.partial").mkdir()
    second = make_dataset(tmp_path, [1, 2, 3], 0.4, 64, 48, workers=1)
    assert (second.made, second.skipped) == (1, 2)
    assert [p.name for p in list_clips(tmp_path)] == ["clip_000001", "clip_000002", "clip_000003"]


def test_a_clip_speaks_given_speech() -> None:
    own, other = make_clip(3, 1.0, 64, 48), make_clip(4, 1.0, 64, 48)
    spoken = make_clip(3, 1.0, 64, 48, speech=other.audio)
    assert np.array_equal(spoken.audio, other.audio)
    assert torch.equal(spoken.mouth_open, motion_from_audio(other.audio, 3, TimeBase(), 25).mouth_open)
    assert not torch.equal(spoken.mouth_open, own.mouth_open)


def test_bad_requests_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="resolution"):
        make_clip(1, 1.0, 100_000, 100_000)
    with pytest.raises(ConfigError, match="shorter"):
        make_clip(1, 1.0, 64, 48, speech=np.zeros(8000, np.float32))
    with pytest.raises(DataError, match="no clips"):
        ClipWindows(tmp_path, WindowSpec(frames=4, width=64, height=48))
    (clip_dir(tmp_path, 5)).mkdir()
    with pytest.raises(DataError, match="not a complete clip"):
        read_clip(clip_dir(tmp_path, 5))


def test_fixture_windows_are_aligned() -> None:
    spec = WindowSpec(frames=16, width=160, height=96, pose_stride=4)
    ds = ClipWindows(FIXTURES, spec, hop=8)
    assert len(ds) >= 4
    spf = TIME.samples_per_frame
    for i in range(len(ds)):
        w = ds[i]
        start = w["start_frame"]
        assert w["audio_start"] == start * spf
        assert w["frames"].shape == (16, 3, 96, 160)
        assert w["audio"].shape == (16 * spf,)
        assert w["pose"].shape == (8, 16, 24, 40)
        clip = read_clip(ds.clips[ds.index[i][0]])
        assert torch.equal(w["audio"], torch.from_numpy(clip.audio[start * spf : (start + 16) * spf]))
        # Sound and mouth line up frame by frame: the mouth recomputed from the window's own audio
        # matches the stored ground truth once the follower has settled (frame 6) and before the
        # analysis window runs past the window's end. A one-frame shift breaks this by ~0.4.
        recomputed = motion_from_audio(w["audio"].numpy(), 0, TIME, 16).mouth_open
        torch.testing.assert_close(recomputed[6:15], w["mouth_open"][6:15], atol=0.01, rtol=0)


def test_windows_at_another_resolution_and_on_the_fly_match_disk() -> None:
    spec = WindowSpec(frames=8, width=80, height=48, pose_stride=4)
    disk = ClipWindows(FIXTURES, spec)[0]
    seed = disk["identity"]
    seconds = read_clip(list_clips(FIXTURES)[0]).meta["frames"] / TIME.fps
    fly = next(iter(ProceduralWindows([seed], seconds, WindowSpec(frames=8, width=160, height=96))))
    assert torch.equal(fly["audio"], disk["audio"])
    assert torch.equal(fly["points"], disk["points"])
    small = torch.nn.functional.interpolate(fly["frames"], size=(48, 80), mode="bilinear", antialias=True)
    assert (small - disk["frames"]).abs().mean() < 0.02
    # A narrower window is the centre of the clip, as the engine frames pictures: what a render
    # at that size shows, with the same keypoints (canvas units).
    square = WindowSpec(frames=8, width=96, height=96)
    centre = ClipWindows(FIXTURES, square)[0]
    rendered = next(iter(ProceduralWindows([seed], seconds, square)))
    assert (centre["frames"] - rendered["frames"]).abs().mean() < 0.01
    assert torch.equal(centre["points"], rendered["points"])
    with pytest.raises(ConfigError, match="wider than the clip"):
        ClipWindows(FIXTURES, WindowSpec(frames=8, width=200, height=96))[0]


@pytest.mark.parametrize("mix", [1, 2])
def test_grouped_sampler_visits_every_window_once_mixing_clips(mix: int) -> None:
    ds = ClipWindows(FIXTURES, WindowSpec(frames=9, width=80, height=48), hop=4, cache=mix)
    order = list(ClipGroupedSampler(ds, mix, torch.Generator().manual_seed(0)))
    assert sorted(order) == list(range(len(ds)))
    clips = [ds.index[i][0] for i in order]
    switches = sum(a != b for a, b in itertools.pairwise(clips))
    # One clip at a time switches clip once; two at a time interleave them.
    assert switches == 1 if mix == 1 else switches > 2


def test_shuffled_keeps_every_window_and_mixes_characters() -> None:
    spec = WindowSpec(frames=5, width=32, height=16)
    plain = [w["identity"] for w in ProceduralWindows(range(3), 1.0, spec)]
    mixed = [w["identity"] for w in Shuffled(ProceduralWindows(range(3), 1.0, spec), size=4, seed=1)]
    assert sorted(mixed) == sorted(plain) and mixed != plain
