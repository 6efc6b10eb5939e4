"""Every `ihuman train` task by name (`TASKS`), built with the trained parts it reads from a bundle
passed to its constructor."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from engine.audio.encoder import AudioEncoder
from engine.checkpoint import PART_BUILDERS, BundleError, load_bundle, read_config, save_bundle
from engine.config import Config
from engine.data.dataset import WindowSpec
from engine.exceptions import ConfigError
from engine.models.hand_reward import HandEvaluator
from engine.models.mouth_judge import MouthJudge
from engine.models.pose import PoseHead
from engine.models.vae import VideoAutoencoder
from engine.parts import REQUIRED, Parts
from engine.training.generators import HandReflTask, LRA2VTask, window_spec
from engine.training.part_tasks import (
    AudioTask,
    HandEvaluatorTask,
    MouthJudgeTask,
    MouthTask,
    PoseTask,
    VAETask,
)
from engine.training.refiners import DistillTask, RefinerTask
from engine.training.task import Task

PART_TASKS = ("vae", "pose", "audio", "hand-evaluator", "mouth-judge")  # trained on their own
GENERATOR_TASKS = ("lr-a2v", "refiner", "distill", "hand-refl")  # read trained parts from the bundle


def trained_parts(
    config: Config, bundle: Path | None, names: tuple[str, ...]
) -> tuple[Parts, dict[str, nn.Module]]:
    """The bundle's trained `names` (frozen, eval) with fresh modules for the other engine parts;
    parts that are not engine parts (the hand evaluator, the refiner's teacher) come back apart."""
    have = (
        load_bundle(bundle, names).parts if bundle is not None and (bundle / "config.json").is_file() else {}
    )
    missing = [n for n in names if n not in have]
    if missing:
        raise BundleError(
            f"{bundle} has no trained {', '.join(missing)}: train them first (ihuman train "
            f"{' / '.join(missing)} --out {bundle})"
        )
    for module in have.values():
        module.eval().requires_grad_(False)
    engine = {n: have[n] if n in have else PART_BUILDERS[n](config) for n in REQUIRED}
    extras = {n: m for n, m in have.items() if n not in REQUIRED}
    return Parts(config=config, **engine, source=f"training from {bundle}"), extras


def _trainable_copy(module: nn.Module, config: Config, part: str) -> nn.Module:
    copy = PART_BUILDERS[part](config)
    copy.load_state_dict(module.state_dict())
    return copy.train().requires_grad_(True)


@dataclass(frozen=True)
class TaskRequest:
    """What `ihuman train` asks of a task builder (sizes already defaulted and checked)."""

    name: str
    config: Config
    width: int
    height: int
    bundle: Path | None
    crop: int | None = None
    half_scale: float = 0.0


def _vae(r: TaskRequest) -> Task:
    spec = WindowSpec(frames=1 + 2 * r.config.time.vae_temporal_stride, width=r.width, height=r.height)
    return VAETask(r.name, "vae", VideoAutoencoder(r.config), {}, spec, crop=r.crop, half_scale=r.half_scale)


def _frames(task: type[Task], part: str, model: type[nn.Module]) -> Callable[[TaskRequest], Task]:
    """A model of its own on windows of 4 frames."""

    def build(r: TaskRequest) -> Task:
        return task(r.name, part, model(r.config), {}, WindowSpec(frames=4, width=r.width, height=r.height))

    return build


def _audio(r: TaskRequest) -> Task:
    mouth = nn.Linear(r.config.audio.feature_dim, 1)
    spec = WindowSpec(frames=50, width=r.width, height=r.height)
    return AudioTask(r.name, "audio", AudioEncoder(r.config), {"mouth": mouth}, spec)


def _hand_evaluator(r: TaskRequest) -> Task:
    spec = WindowSpec(frames=1, width=r.width, height=r.height)
    return HandEvaluatorTask(r.name, "hand", HandEvaluator(r.config), {}, spec)


def _mouth(r: TaskRequest) -> Task:
    """The pose head's mouth reader, on the bundle's trained head (and its autoencoder, if any)."""
    if r.bundle is None or not (r.bundle / "pose.safetensors").is_file():
        raise BundleError(
            f"{r.bundle} has no trained pose head: train it first (ihuman train pose --out {r.bundle})"
        )
    head = load_bundle(r.bundle, ("pose",)).parts["pose"]
    head.requires_grad_(False).mouth.requires_grad_(True)
    vae = None
    if (r.bundle / "vae.safetensors").is_file():
        vae = load_bundle(r.bundle, ("vae",)).parts["vae"].eval().requires_grad_(False)
    spec = WindowSpec(frames=4, width=r.width, height=r.height)
    return MouthTask(r.name, "pose", head, {}, spec, vae=vae)


def _lr_a2v(r: TaskRequest) -> Task:
    parts, _ = trained_parts(r.config, r.bundle, ("vae", "audio"))
    spec = window_spec(LRA2VTask, r.config, r.width, r.height)
    return LRA2VTask(r.name, "lr_a2v", parts.lr_a2v.train(), {}, spec, parts)


def _refiner(r: TaskRequest) -> Task:
    parts, _ = trained_parts(r.config, r.bundle, ("vae", "pose"))
    spec = window_spec(RefinerTask, r.config, r.width, r.height)
    return RefinerTask(r.name, "refiner", parts.refiner.train(), {}, spec, parts)


def _distill(r: TaskRequest) -> Task:
    """The student starts as a copy of the teacher; the bundle keeps the teacher as refiner_teacher."""
    if r.bundle is None:
        raise BundleError("distill reads its teacher from a bundle: pass --out BUNDLE")
    has_teacher = "refiner_teacher" in read_config(r.bundle)[1].get("parts", {})
    teacher_name = "refiner_teacher" if has_teacher else "refiner"
    parts, extras = trained_parts(r.config, r.bundle, ("vae", "pose", teacher_name))
    teacher = extras.get("refiner_teacher") or parts.refiner
    if not has_teacher:  # keep the multi-step refiner: `refiner` becomes the student
        save_bundle(r.bundle, r.config, {"refiner_teacher": teacher}, merge=True)
    student = _trainable_copy(teacher, r.config, "refiner")
    spec = window_spec(RefinerTask, r.config, r.width, r.height)
    return DistillTask(r.name, "refiner", student, {}, spec, parts, teacher)


def _hand_refl(r: TaskRequest) -> Task:
    parts, extras = trained_parts(r.config, r.bundle, ("vae", "audio", "pose", "hand", "lr_a2v"))
    model = _trainable_copy(parts.lr_a2v, r.config, "lr_a2v")
    spec = window_spec(LRA2VTask, r.config, r.width, r.height)
    return HandReflTask(r.name, "lr_a2v", model, {}, spec, parts, extras["hand"])


TASKS: dict[str, Callable[[TaskRequest], Task]] = {
    "vae": _vae,
    "pose": _frames(PoseTask, "pose", PoseHead),
    "audio": _audio,
    "hand-evaluator": _hand_evaluator,
    "mouth-judge": _frames(MouthJudgeTask, "mouth_judge", MouthJudge),
    "mouth": _mouth,  # the pose head's reader, on the trained head
    "lr-a2v": _lr_a2v,
    "refiner": _refiner,
    "distill": _distill,
    "hand-refl": _hand_refl,
}
"""Every task by name: its builder, given the request."""


def build_task(
    name: str,
    config: Config,
    width: int | None = None,
    height: int | None = None,
    crop: int | None = None,
    bundle: Path | None = None,
    half_scale: float = 0.0,
) -> Task:
    """The task with its model (fresh) and window spec (default sizes: HR for vae and refiner, LR
    otherwise). crop: vae only, train on random crops of this many pixels (a multiple of the VAE
    stride). bundle: where the generator tasks read the trained parts they need."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; tasks: {', '.join(TASKS)}")
    res = config.hr if name in ("vae", "refiner", "distill") else config.lr
    w, h = width or res.width, height or res.height
    if crop is not None and (name != "vae" or crop <= 0 or crop % config.time.vae_spatial_stride):
        raise ConfigError(
            f"--crop is for the vae task, a positive multiple of {config.time.vae_spatial_stride}; got {crop}"
        )
    if half_scale and (name != "vae" or not 0 <= half_scale <= 1):
        raise ConfigError(f"--half-scale is for the vae task, a share in [0, 1]; got {half_scale}")
    if name in GENERATOR_TASKS and (w, h) != (res.width, res.height):
        raise ConfigError(f"{name} trains at the preset's size {res}: its latent grid is fixed")
    return TASKS[name](TaskRequest(name, config, w, h, bundle, crop, half_scale))
