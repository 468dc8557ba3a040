"""image-classification: ViT-style models with AutoModelForImageClassification, and timm backbones
(`timm/...` repos, through transformers' TimmWrapperForImageClassification; see hfadapt.timm_models).

Size, mean and std come from the model's image processor (for timm, the checkpoint's pretrained_cfg).
Labels are checked and every image is decoded once in a cached `datasets.map` pass, so an
unreadable file fails before training; pixels are produced on the fly (`with_transform`) because cached pixel arrays would be far
larger than the images and augmentation must differ every epoch.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Literal

from pydantic import Field, model_validator

from hfadapt.tasks import classification
from hfadapt.data.sources import ROW_COLUMN, is_streamed, map_split, row_location
from hfadapt.core.errors import HfadaptError, first_line
from hfadapt.core.recipe import DataSection, Section
from hfadapt.tasks.base import register_task
from hfadapt.tasks.classification import ClassificationTask

if TYPE_CHECKING:
    from PIL.Image import Image
    from timm.data import Mixup
    from transformers import BaseImageProcessor, PretrainedConfig, PreTrainedModel

    from hfadapt.core.recipe import Recipe
    from hfadapt.data.labels import LabelInfo
    from hfadapt.tasks.base import Collate, Split


class TimmAugment(Section):
    """Train-time augmentation with timm's own transforms (`timm.data.create_transform`) and
    `timm.data.Mixup`; evaluation and predict always use the plain eval transform."""

    auto_augment: str | None = Field(
        None, description="timm policy string: rand-m9-mstd0.5 (RandAugment), augmix-m5-w4-d2, original (AutoAugment), ..."
    )
    scale: tuple[float, float] = Field((0.08, 1.0), description="area range of the random resized crop")
    hflip: float = Field(0.5, ge=0, le=1, description="horizontal flip probability")
    color_jitter: float | None = Field(0.4, ge=0, description="colour jitter strength (timm ignores it with auto_augment)")
    re_prob: float = Field(0.0, ge=0, le=1, description="random erasing probability")
    re_mode: Literal["const", "rand", "pixel"] = "pixel"
    re_count: int = Field(1, ge=1)
    mixup: float = Field(0.0, ge=0, description="mixup alpha (0: off); targets become soft, training only")
    cutmix: float = Field(0.0, ge=0, description="cutmix alpha (0: off)")
    mixup_prob: float = Field(1.0, ge=0, le=1, description="probability of mixing a batch")
    switch_prob: float = Field(0.5, ge=0, le=1, description="probability of cutmix instead of mixup when both are on")
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="training loss only; evaluation loss is plain cross-entropy")

    @property
    def mixes(self) -> bool:
        return self.mixup > 0 or self.cutmix > 0


class ImageClassificationData(classification.LabelFields, DataSection):
    """Images (an image feature, or paths relative to the data file) and their labels."""

    image_column: str = "image"
    augment: bool = Field(False, description="random train-time augmentation (random resized crop, horizontal flip)")
    timm_augment: TimmAugment | None = Field(
        None, description="train-time augmentation with timm's transforms, mixup/cutmix and label smoothing; turns augment on"
    )

    @model_validator(mode="after")
    def _timm_augment_means_augment(self) -> "ImageClassificationData":
        if self.timm_augment is not None:
            if "augment" in self.model_fields_set and not self.augment:
                raise ValueError("data.timm_augment: augmentation is off (data.augment: false); remove one of the two")
            self.__dict__["augment"] = True  # no validate_assignment loop
        return self


class ImageClassification(ClassificationTask):
    name = "image-classification"
    modality = "image"
    peft_task_type = None  # peft has no image task type; the head goes to modules_to_save
    auto_class = "AutoModelForImageClassification"
    data_model = ImageClassificationData
    pipeline_tag = "image-classification"  # the Hub's task for the model card
    card_example = "image.jpg"  # the input shown in the model card's usage

    def check(self, recipe: Recipe) -> list[str]:
        problems = super().check(recipe)
        aug = recipe.data.timm_augment
        if aug is not None and recipe.data.problem_type != "single_label" and (aug.mixes or aug.label_smoothing):
            problems.append(
                f"data.timm_augment: mixup, cutmix and label_smoothing need problem_type single_label, not {recipe.data.problem_type}"
            )
        return problems

    def columns(self, recipe: Recipe, with_labels: bool = True) -> dict[str, str]:
        d = recipe.data
        return {d.image_column: "data.image_column", **({d.label_column: "data.label_column"} if with_labels else {})}

    def load_processor(self, recipe: Recipe, path: str | None = None) -> BaseImageProcessor:
        from transformers import AutoImageProcessor

        from hfadapt.modeling.models import check_local_path
        from hfadapt.modeling.timm_models import is_timm_folder
        from hfadapt.modeling.tokenization import require_processor_files

        m = recipe.model
        source = path or m.name_or_path
        field = "model.name_or_path" if path is None else f"the run's folder {path}"
        check_local_path(source, field)
        if not is_timm_folder(source):  # a timm checkpoint keeps its preprocessing in config.json (pretrained_cfg)
            require_processor_files(source, "image processor", field)
        try:
            return AutoImageProcessor.from_pretrained(source, revision=None if path else m.revision, trust_remote_code=m.trust_remote_code)
        except Exception as e:  # noqa: BLE001
            raise HfadaptError(f"model.name_or_path: cannot load an image processor from '{source}': {first_line(e)}") from e

    def preprocess(self, ds: Split, split: str, processor: BaseImageProcessor, recipe: Recipe, info: LabelInfo | None,
                   train: bool) -> Split:
        from datasets import Image as ImageFeature

        d = recipe.data
        col, label_col = d.image_column, d.label_column
        has_labels = label_col in ds.column_names
        if isinstance(ds.features[col], ImageFeature):
            ds = ds.cast_column(col, ImageFeature(decode=False))
        base_dir = _files_dir(recipe, split)

        def check(batch: dict[str, list[Any]], indices: list[int]) -> dict[str, list[Any]]:
            indices = batch.get(ROW_COLUMN, indices)
            out: dict[str, list] = {"image": [open_image(v, col, split, i, base_dir, verify=True, data=d) for v, i in zip(batch[col], indices)]}
            if has_labels:
                out["labels"] = classification.encode_labels(batch[label_col], indices, info, split, d)
            return out

        # The pass stores the encoded image bytes/paths in a cached arrow file; decoding is verified here.
        checked = map_split(
            ds,
            check,
            batched=True,
            with_indices=True,
            remove_columns=ds.column_names,
            num_proc=d.num_proc,
            desc=f"Checking images of {split}",
        )
        transform = _augmenting_transform(processor, d.timm_augment) if (train and d.augment) else None

        def to_pixels(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
            images = [open_image(v, "image", split, None, None) for v in batch["image"]]
            if transform is not None:
                pixels = [transform(im) for im in images]
            else:
                pixels = list(processor(images, return_tensors="pt")["pixel_values"])
            out = {"pixel_values": pixels}
            if "labels" in batch:
                out["labels"] = batch["labels"]
            return out

        if is_streamed(checked):  # decoded as the stream is read
            return checked.map(to_pixels, batched=True, remove_columns=["image"])
        return checked.with_transform(to_pixels)

    def plan_batch(self, recipe: Recipe, config: PretrainedConfig, batch_size: int) -> tuple[dict[str, Any], str]:
        """A meta-device micro-batch for `hfadapt plan` at the model's input size."""
        import torch

        from hfadapt.modeling.meta import meta_labels

        size = getattr(config, "image_size", 224)
        h, w = (size, size) if isinstance(size, int) else tuple(size)
        channels = getattr(config, "num_channels", 3)
        pixels = torch.zeros(batch_size, channels, h, w, device="meta")
        return {"pixel_values": pixels, "labels": meta_labels(batch_size)}, f"{h}x{w} pixels"

    def collator(self, processor: BaseImageProcessor) -> Collate:
        return collate_images

    def train_collator(self, processor: BaseImageProcessor, recipe: Recipe, info: LabelInfo | None) -> Collate:
        """The training batches' collator: mixup/cutmix (timm.data.Mixup) when the recipe asks, else collate_images."""
        aug = recipe.data.timm_augment
        if aug is None or not aug.mixes:
            return collate_images
        from timm.data import Mixup

        mixup = Mixup(
            mixup_alpha=aug.mixup, cutmix_alpha=aug.cutmix, prob=aug.mixup_prob, switch_prob=aug.switch_prob,
            label_smoothing=aug.label_smoothing, num_classes=info.num_labels,
        )
        return MixupCollate(mixup, info.num_labels, aug.label_smoothing)

    def configure_model(self, model: PreTrainedModel, recipe: Recipe) -> None:
        """Called on the loaded base model: soft targets (mixup/cutmix) and label smoothing need a loss that takes them."""
        aug = recipe.data.timm_augment
        if aug is not None and (aug.mixes or aug.label_smoothing):
            from hfadapt.modeling.timm_models import soft_target_loss

            model.loss_function = soft_target_loss(model.loss_function, aug.label_smoothing)

    def encode_inputs(self, items: list[str], processor: BaseImageProcessor, recipe: Recipe) -> dict[str, Any]:
        images = [open_image(p, "input", "predict", i, None) for i, p in enumerate(items)]
        return {"pixel_values": processor(images, return_tensors="pt")["pixel_values"]}


def collate_images(rows: list[dict[str, Any]]) -> dict[str, Any]:
    import torch

    batch = {"pixel_values": torch.stack([r["pixel_values"] for r in rows])}
    if "labels" in rows[0]:
        batch["labels"] = torch.tensor([r["labels"] for r in rows])
    return batch


class MixupCollate:
    """collate_images, then timm's Mixup on the batch: labels become soft (batch, classes) targets.

    timm's Mixup needs an even batch; an odd last batch mixes all but its last example, which gets
    the same (smoothed) one-hot target timm would give an unmixed one. Runs in the process that
    draws the batch (numpy's RNG, saved in checkpoints), so a resumed run mixes the same way.
    """

    def __init__(self, mixup: Mixup, num_classes: int, smoothing: float) -> None:
        self.mixup, self.num_classes, self.smoothing = mixup, num_classes, smoothing

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        import torch
        from timm.data.mixup import mixup_target

        batch = collate_images(rows)
        x, y = batch["pixel_values"], batch["labels"]
        even = len(x) - len(x) % 2
        if even == 0:
            batch["labels"] = mixup_target(y, self.num_classes, lam=1.0, smoothing=self.smoothing)
            return batch
        mixed_x, mixed_y = self.mixup(x[:even].clone(), y[:even])
        if even < len(x):
            rest = mixup_target(y[even:], self.num_classes, lam=1.0, smoothing=self.smoothing)
            mixed_x, mixed_y = torch.cat([mixed_x, x[even:]]), torch.cat([mixed_y, rest])
        batch["pixel_values"], batch["labels"] = mixed_x, mixed_y
        return batch


def open_image(value: object, column: str, split: str, row: int | None, base_dir: Path | None, verify: bool = False,
               data: DataSection | None = None) -> Image | dict[str, Any]:
    """A PIL RGB image from an Image feature dict, a path, or bytes; one clear error otherwise.

    With verify=True the value is returned in storable form (dict of bytes/path) after a full decode.
    `data` (the recipe's data section) lets errors name the line of the user's file.
    """
    from PIL import Image

    if row is None:
        where = f"image {value!r}"
    elif split == "predict":
        where = f"predict input {row + 1}"
    elif data is not None and not data.train_files and data.dataset and Path(data.dataset).is_dir():
        where = f"data.dataset {data.dataset}"  # an image folder: the file's path says where it is
    else:
        where = f"data.image_column '{column}', {row_location(split, row, data)}"
    source: Any = value
    if isinstance(value, dict):
        source = io.BytesIO(value["bytes"]) if value.get("bytes") else value.get("path")
    elif isinstance(value, str):
        path = Path(value)
        if base_dir is not None and not path.is_absolute():
            path = base_dir / path
        source = str(path)
        value = {"bytes": None, "path": str(path)}
    elif hasattr(value, "convert"):  # already a PIL image
        return value.convert("RGB")
    if source is None:
        raise HfadaptError(f"{where}: no image")
    if isinstance(source, str) and not Path(source).is_file():
        raise HfadaptError(f"{where}: image file not found: {source}")
    if isinstance(source, str) and Path(source).stat().st_size == 0:
        raise HfadaptError(f"{where}: cannot read image {source}: the file is empty (0 bytes)")
    try:
        with Image.open(source) as im:
            im.load()
            rgb = im.convert("RGB")
    except Exception as e:  # noqa: BLE001
        name = value.get("path") if isinstance(value, dict) else value
        raise HfadaptError(f"{where}: cannot read image {name}: {type(e).__name__}: {first_line(e)}") from None
    return value if verify else rgb


def _files_dir(recipe: Recipe, split: str) -> Path | None:
    """Relative image paths in a CSV/JSON column are relative to that file's folder."""
    files = recipe.data.train_files if split == "train" else (recipe.data.validation_files or recipe.data.train_files)
    if files:
        return Path(files[0]).resolve().parent
    return None


def _augmenting_transform(processor: BaseImageProcessor, timm_augment: TimmAugment | None = None) -> Callable[[Image], Any]:
    """Train-time transform: timm's (create_transform with the model's data config) for timm models
    or when data.timm_augment is set, else random resized crop + flip with the processor's size/mean/std."""
    from torchvision import transforms as T

    from hfadapt.modeling.timm_models import data_config

    if timm_augment is not None or hasattr(processor, "data_config"):
        from timm.data import create_transform

        a = timm_augment or TimmAugment()
        try:
            return create_transform(
                **data_config(processor), is_training=True, scale=a.scale, hflip=a.hflip, color_jitter=a.color_jitter,
                auto_augment=a.auto_augment, re_prob=a.re_prob, re_mode=a.re_mode, re_count=a.re_count,
            )
        except Exception as e:  # noqa: BLE001 - timm raises AssertionError/ValueError/KeyError for a bad policy string
            raise HfadaptError(f"data.timm_augment: timm cannot build the transform (auto_augment={a.auto_augment!r}): {first_line(e)}") from e

    size = processor.size
    if "height" in size:
        crop = (size["height"], size["width"])
    else:
        crop = size.get("shortest_edge", 224)
    mean = getattr(processor, "image_mean", None) or [0.5, 0.5, 0.5]
    std = getattr(processor, "image_std", None) or [0.5, 0.5, 0.5]
    return T.Compose([T.RandomResizedCrop(crop), T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(mean, std)])


register_task(ImageClassification())
