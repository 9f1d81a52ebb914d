"""Train EOV-Seg: one entry point for one GPU, many GPUs and many nodes.

    ovseg-train --config my.json                              # one process (GPU or CPU)
    torchrun --nproc-per-node 8 -m ovseg_training.train --config my.json
    torchrun --nnodes 4 --nproc-per-node 8 --rdzv-endpoint HOST:29500 -m ovseg_training.train ...

Frozen CLIP towers; the neck, VAS and decoder learn. DDP with SyncBatchNorm in the
neck and VAS, optional mixed precision, gradient accumulation, full-model gradient
clipping, checkpoints (official key names: the node loads them) with exact resume of
model, optimiser, scheduler, data order and RNG states.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from ovseg_ros.checkpoint import load_checkpoint, load_clip_towers, load_state_dict, official_state_dict
from ovseg_ros.config import variant_config
from ovseg_ros.modeling import EOVSeg
from ovseg_ros.postprocess import class_logits
from ovseg_ros.vocabulary import TextEmbedder, Vocabulary
from ovseg_training.config import TrainConfig
from ovseg_training.data import LargeScaleJitter, PanopticDataset, collate
from ovseg_training.gkc import clip_region_targets, diversified_class_logits
from ovseg_training.init import initialize_like_published
from ovseg_training.losses import SetCriterion

log = logging.getLogger("ovseg_training")


def build_model(config: TrainConfig) -> EOVSeg:
    model = EOVSeg(variant_config(config.variant))
    if config.init_checkpoint:
        load_checkpoint(model, config.init_checkpoint)
    else:
        initialize_like_published(model)
        if config.clip_resnet and config.clip_vit:
            load_clip_towers(model, config.clip_resnet, config.clip_vit)
        else:
            log.warning("no init_checkpoint and no CLIP files: the frozen CLIP towers keep random weights")
    for frozen in (model.image_encoder, model.text_encoder, model.vit_stem):
        frozen.requires_grad_(False)
    model.clip_logit_scale.requires_grad_(False)
    return model


NORM_LAYERS = (  # detectron2's get_default_optimizer_params: these take weight_decay_norm
    torch.nn.BatchNorm1d, torch.nn.BatchNorm2d, torch.nn.BatchNorm3d, torch.nn.SyncBatchNorm, torch.nn.GroupNorm,
    torch.nn.InstanceNorm1d, torch.nn.InstanceNorm2d, torch.nn.InstanceNorm3d, torch.nn.LayerNorm, torch.nn.LocalResponseNorm,
)


def parameter_groups(model: torch.nn.Module, weight_decay: float, weight_decay_norm: float = 0.0,
                     weight_decay_embed: float = 0.0) -> list[dict]:
    """The trainable parameters in AdamW groups as the published recipe has them
    (detectron2's get_default_optimizer_params, as EOV-Seg's build_optimizer calls it):
    normalisation layers' weights and biases take `weight_decay_norm`, embeddings
    (nn.Embedding: the query kernels; and the void embedding, an nn.Embedding there)
    `weight_decay_embed`, the rest `weight_decay`."""
    norm, embed, rest, seen = [], [], [], set()
    for module_name, module in model.named_modules():
        for name, parameter in module.named_parameters(recurse=False):
            if not parameter.requires_grad or id(parameter) in seen:
                continue
            seen.add(id(parameter))
            full = f"{module_name}.{name}" if module_name else name
            if isinstance(module, NORM_LAYERS):
                norm.append(parameter)
            elif isinstance(module, torch.nn.Embedding) or full == "void_embedding":
                embed.append(parameter)
            else:
                rest.append(parameter)
    groups = [{"params": rest, "weight_decay": weight_decay}, {"params": norm, "weight_decay": weight_decay_norm},
              {"params": embed, "weight_decay": weight_decay_embed}]
    return [g for g in groups if g["params"]]


@dataclass
class ClassText:
    """Training classes' text rows: every synonym, class after class."""

    synonyms: list[list[str]]
    embeddings: dict[str, torch.Tensor]

    def rows(self) -> tuple[torch.Tensor, torch.Tensor]:
        """([S, D] every synonym's embedding, [S] the class of each row)."""
        names = [n for names in self.synonyms for n in names]
        index = [i for i, names in enumerate(self.synonyms) for _ in names]
        return torch.stack([self.embeddings[n] for n in names]), torch.tensor(index)

    @property
    def synonyms_per_class(self) -> torch.Tensor:
        return torch.tensor([len(names) for names in self.synonyms])


class EpochDataset(Dataset):
    """Augmentation randomness derived from (seed, epoch, index): the same item gets the
    same crop after a resume, whatever worker loads it."""

    def __init__(self, base: PanopticDataset, config: TrainConfig) -> None:
        self.base, self.config, self.epoch = base, config, 0

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> dict:
        d = self.config.data
        seed = np.random.SeedSequence([self.config.seed, self.epoch, index])
        self.base.transform = LargeScaleJitter(d.image_size, d.min_scale, d.max_scale, d.flip, seed=seed)
        return self.base[index]


def distributed_setup() -> tuple[int, int, torch.device]:
    """(rank, world size, device) from torchrun's environment; one process without it."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return (dist.get_rank() if world > 1 else 0), world, device


class Trainer:
    def __init__(self, config: TrainConfig, dataset: PanopticDataset, model: EOVSeg | None = None) -> None:
        self.config = config
        self.rank, self.world, self.device = distributed_setup()
        self._seed_everything(config.seed + self.rank)
        self.model = (model if model is not None else build_model(config)).to(self.device)
        if self.world > 1:
            if self.device.type == "cuda":  # SyncBatchNorm runs on GPUs only; CPU (gloo) runs keep per-process BN
                self.model.neck = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.model.neck)
                self.model.decoder.vas = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.model.decoder.vas)
            self.ddp = DistributedDataParallel(self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        else:
            self.ddp = self.model
        self.dataset = EpochDataset(dataset, config)
        self.text = self._encode_class_names(dataset.class_names)
        self.criterion = SetCriterion(len(dataset.class_names), config.loss, config.gkc)
        self.parameters = [p for p in self.model.parameters() if p.requires_grad]
        o = config.optim
        self.optimizer = torch.optim.AdamW(parameter_groups(self.model, o.weight_decay, o.weight_decay_norm, o.weight_decay_embed),
                                           lr=o.lr)
        self.scheduler = torch.optim.lr_scheduler.MultiStepLR(self.optimizer, milestones=list(o.steps), gamma=o.gamma)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=config.amp == "fp16")
        self.iteration = 0
        per_process = o.batch_size // (self.world * o.grad_accumulation)
        if per_process < 1 or per_process * self.world * o.grad_accumulation != o.batch_size:
            raise ValueError(f"batch_size {o.batch_size} must be a multiple of processes x accumulation ({self.world} x {o.grad_accumulation})")
        self.per_process_batch = per_process
        self.sampler = DistributedSampler(self.dataset, self.world, self.rank, shuffle=True, seed=config.seed, drop_last=True)
        self.text_generator = torch.Generator().manual_seed(config.seed)
        self.writer = self._tensorboard()

    def _seed_everything(self, seed: int) -> None:
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)

    def _encode_class_names(self, names: list[str]) -> ClassText:
        synonyms = [list(class_names) for class_names in Vocabulary.parse(names).classes]
        embedder = TextEmbedder(self.model.text_encoder)
        flat = [n for names in synonyms for n in names]
        vectors = embedder.embed_names(flat).to(self.device)
        return ClassText(synonyms, dict(zip(flat, vectors)))

    def _tensorboard(self):
        if self.rank != 0:
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            log.info("tensorboard not installed: no TensorBoard logs (pip install ovseg_training[tensorboard])")
            return None
        return SummaryWriter(str(Path(self.config.output_dir) / "tensorboard"))

    def batches(self):
        """Batches from the current iteration on, epoch after epoch, in a fixed order."""
        steps_per_epoch = len(self.sampler) // self.per_process_batch
        if steps_per_epoch == 0:
            raise ValueError("dataset smaller than one batch")
        accumulation = self.config.optim.grad_accumulation
        position = self.iteration * accumulation
        while True:
            epoch, skip = divmod(position, steps_per_epoch)
            self.sampler.set_epoch(epoch)
            self.dataset.epoch = epoch
            loader = DataLoader(
                self.dataset, batch_size=self.per_process_batch, sampler=self.sampler, collate_fn=collate,
                num_workers=self.config.data.workers, pin_memory=self.device.type == "cuda", drop_last=True,
            )
            for i, batch in enumerate(loader):
                if i < skip:
                    continue
                yield batch
                position += 1
            skip = 0

    def train_step(self, micro_batches: list[dict]) -> dict[str, float]:
        self.ddp.train()
        for frozen in (self.model.image_encoder, self.model.text_encoder, self.model.vit_stem):
            frozen.eval()  # frozen BatchNorm statistics
        gkc = self.config.gkc
        distilling = bool(gkc.distill_weight or gkc.relation_weight)
        text, class_index = self.text.rows()
        class_index = class_index.to(self.device)
        num_classes = len(self.text.synonyms)
        mean = torch.tensor(self.model.config.pixel_mean, device=self.device).view(1, 3, 1, 1)
        std = torch.tensor(self.model.config.pixel_std, device=self.device).view(1, 3, 1, 1)
        logged_total: dict[str, float] = {}
        amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.config.amp)
        for batch in micro_batches:
            images = (batch["images"].to(self.device).float() - mean) / std
            labels = [x.to(self.device) for x in batch["labels"]]
            masks = [x.to(self.device) for x in batch["masks"]]
            with torch.autocast(self.device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                out = self.ddp(images, text, keep_features=distilling)
            text_with_void = self.model.text_with_void(text)
            if gkc.text_diversification:  # one draw per (image, query, class) this step, the same at every stage
                draws = torch.rand((*out.class_embeddings[0].shape[:2], num_classes), generator=self.text_generator)
                stage_logits = [diversified_class_logits(emb.float(), text_with_void, scale, self.text.synonyms_per_class, draws)
                                for emb, scale in zip(out.class_embeddings, out.class_logit_scales)]
            else:
                stage_logits = [class_logits(emb.float(), text_with_void, scale, class_index, num_classes)
                                for emb, scale in zip(out.class_embeddings, out.class_logit_scales)]
            regions = None
            if distilling:
                regions = clip_region_targets(self.model.image_encoder, out.features["cnn_res5"].float(), masks, labels,
                                              text_with_void, self.model.clip_logit_scale, class_index, num_classes)
            loss, logged = self.criterion(stage_logits, [m.float() for m in out.mask_logits], labels, masks,
                                          out.class_embeddings if distilling else None, regions)
            self.scaler.scale(loss / len(micro_batches)).backward()
            for key, value in logged.items():
                logged_total[key] = logged_total.get(key, 0.0) + value / len(micro_batches)
            logged_total["loss"] = logged_total.get("loss", 0.0) + float(loss.detach()) / len(micro_batches)
        self.scaler.unscale_(self.optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.parameters, self.config.optim.clip_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        self.iteration += 1
        logged_total["grad_norm"] = float(grad_norm)
        logged_total["lr"] = self.scheduler.get_last_lr()[0]
        return logged_total

    def train(self, iterations: int | None = None, progress: bool = True) -> list[dict[str, float]]:
        from tqdm import tqdm

        end = self.config.optim.max_iter if iterations is None else min(self.config.optim.max_iter, self.iteration + iterations)
        history, stream = [], self.batches()
        accumulation = self.config.optim.grad_accumulation
        bar = tqdm(total=end - self.iteration, disable=not progress or self.rank != 0, desc="training")
        while self.iteration < end:
            logged = self.train_step([next(stream) for _ in range(accumulation)])
            history.append(logged)
            bar.update(1)
            if self.rank == 0 and self.iteration % self.config.log_every == 0:
                bar.set_postfix(loss=f"{logged['loss']:.3f}")
                if self.writer is not None:
                    for key, value in logged.items():
                        self.writer.add_scalar(f"train/{key}", value, self.iteration)
            if self.config.checkpoint_every and self.iteration % self.config.checkpoint_every == 0:
                self.save()
        bar.close()
        return history

    def state(self) -> dict:
        """Everything a resume needs, in types torch.load(weights_only=True) accepts, so
        the node (which loads weights only) reads the same file."""
        scheduler = self.scheduler.state_dict()
        scheduler["milestones"] = dict(scheduler["milestones"])  # a Counter in torch
        kind, keys, position, has_gauss, gauss = np.random.get_state()
        return {
            "model": {k: v.detach().cpu() for k, v in official_state_dict(self.model).items()},
            "optimizer": self.optimizer.state_dict(),
            "scheduler": scheduler,
            "scaler": self.scaler.state_dict(),
            "iteration": self.iteration,
            "rng": {
                "python": random.getstate(),
                "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, gauss),
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                "text": self.text_generator.get_state(),
            },
            "config": self.config.to_dict(),
        }

    def save(self, path: str | Path | None = None) -> Path | None:
        """model_<iteration>.pth (and last_checkpoint) in output_dir, on rank 0."""
        if self.rank != 0:
            return None
        out = Path(self.config.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        path = Path(path) if path else out / f"model_{self.iteration:07d}.pth"
        torch.save(self.state(), path)
        (out / "last_checkpoint").write_text(path.name)
        return path

    def resume(self, path: str | Path) -> None:
        state = torch.load(path, map_location="cpu", weights_only=True)
        load_state_dict(self.model, state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        scheduler = state["scheduler"]
        scheduler["milestones"] = Counter(scheduler["milestones"])
        self.scheduler.load_state_dict(scheduler)
        self.scaler.load_state_dict(state["scaler"])
        self.iteration = int(state["iteration"])
        rng = state["rng"]
        random.setstate(rng["python"])
        kind, keys, position, has_gauss, gauss = rng["numpy"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, gauss))
        torch.set_rng_state(rng["torch"])
        if rng["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        self.text_generator.set_state(rng["text"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, help="JSON with TrainConfig fields (nested data/loss/optim)")
    parser.add_argument("--resume", action="store_true", help="continue from output_dir/last_checkpoint")
    parser.add_argument("--iterations", type=int, help="stop after this many more iterations")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:  # everything that can be wrong with the inputs, before a model is built
        config = TrainConfig.from_file(args.config) if args.config else TrainConfig()
        d = config.data
        dataset = PanopticDataset(Path(d.root) / d.annotations, Path(d.root) / d.images, Path(d.root) / d.panoptic_masks,
                                  class_names=d.class_names)
        for path, what in ((config.init_checkpoint, "init_checkpoint"), (config.clip_resnet, "clip_resnet"), (config.clip_vit, "clip_vit")):
            if path and not Path(path).is_file():
                raise FileNotFoundError(f"{what} not found: {path}")
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    trainer = Trainer(config, dataset)
    last = Path(config.output_dir) / "last_checkpoint"
    if args.resume and last.exists():
        trainer.resume(last.parent / last.read_text().strip())
        log.info("resumed at iteration %d", trainer.iteration)
    trainer.train(args.iterations)
    trainer.save()
    if dist.is_initialized():
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
