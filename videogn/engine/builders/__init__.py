"""Config -> objects, in one place: one builder per config group, each returning a plain,
config-free object. Nothing below this package reads the config.

=========  ==========================================  =====================================
group      builder                                     returns
=========  ==========================================  =====================================
model+norm :func:`.model.build_model_spec`             :class:`.model.ModelSpec` (``create()``)
data       :func:`.data.build_data`                    :class:`.data.DataSpec` (lists, datasets)
sampler    :func:`.sampler.build_samplers`             :class:`.sampler.ClipSamplers`
optim      :func:`.optim.build_optim`                  :class:`.optim.OptimSpec` (SGD, schedule)
trainer    :func:`.trainer.build_trainer_spec`         :class:`.trainer.TrainerSpec`
test       :func:`.test.build_test_options`            :class:`~videogn.engine.evaluate.TestOptions`
=========  ==========================================  =====================================

:func:`build_run_spec` hands each group of a composed config to its builder; the entry points
(``videogn.engine.run``, the sweeps, predict) wire the returned objects together.
"""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import DictConfig, OmegaConf

from videogn.data.transforms import TestTransform
from videogn.engine.builders.data import DataSpec, build_data
from videogn.engine.builders.model import ModelSpec, build_model_spec
from videogn.engine.builders.optim import OptimSpec, build_optim
from videogn.engine.builders.sampler import ClipSamplers, build_samplers
from videogn.engine.builders.test import build_test_options, build_test_transform
from videogn.engine.builders.trainer import TrainerSpec, build_trainer_spec
from videogn.engine.evaluate import TestOptions


@dataclass
class RunSpec:
    """Every group of a run's config as plain objects, plus the root settings."""

    model: ModelSpec
    data: DataSpec
    samplers: ClipSamplers
    optim: OptimSpec
    trainer: TrainerSpec
    test: TestOptions
    seed: int
    deterministic: bool
    device: str
    config: dict  # the resolved config, recorded in every checkpoint

    def test_transform(self) -> TestTransform:
        return build_test_transform(self.test, self.data)


def build_run_spec(cfg: DictConfig, trained: DictConfig | None = None) -> RunSpec:
    """Each group of a composed ``TrainConfig`` through its builder.

    Args:
        trained: the config the model was trained with, when ``cfg`` overrides it (a restored
            run tested with another sampler): its clip and crop size the fully_conv window.
    """
    trained = cfg if trained is None else trained
    test = build_test_options(
        cfg.test, train_frames=trained.sampler.num_frames, train_crop_size=trained.data.crop_size
    )
    return RunSpec(
        model=build_model_spec(cfg.model, cfg.norm),
        data=build_data(cfg.data),
        samplers=build_samplers(
            cfg.sampler, num_test_clips=test.num_clips, clip_positions=test.clip_positions
        ),
        optim=build_optim(cfg.optim),
        trainer=build_trainer_spec(cfg.trainer),
        test=test,
        seed=cfg.seed,
        deterministic=cfg.deterministic,
        device=cfg.device,
        config=OmegaConf.to_container(cfg, resolve=True, enum_to_str=True),
    )
