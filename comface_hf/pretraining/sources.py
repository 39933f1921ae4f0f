"""Where pretraining pairs come from, one micro-batch at a time.

A source's ``batch(epoch, start, count, s)`` returns ``x, y [count, 3, S, S]`` in [0, 1] (the same identity, one
attribute edited to ``alpha_x`` and ``alpha_y`` with ``|alpha_y - alpha_x| <= s``) plus ``alpha_x, alpha_y, identity,
attribute [count]``; every value is a function of ``(seed, epoch, start)``, so a DataLoader worker can render ahead and
a resumed run sees the same pairs. :class:`EpochBatches` turns that into a process's augmented views per micro-step.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from ..image_processing_comface import ComFaceImageProcessor
from ..synthesis.spec import GeneratorSpec, build_generator
from .augment import augment_batch, augmentation_config, step_generator
from .generators import build_stream_generator, embedded_spec, uses_generator_specs
from .pairs import CorpusPairSampler, StreamingPairSampler, split_identities
from .profiling import stage


class StreamingPairs:
    """Renders each micro-batch's pairs on the training device: storage never bounds the scale."""

    max_pairs = float("inf")

    def __init__(self, args, generator, identities: np.ndarray, attributes: np.ndarray, photographic: float):
        """``attributes``: the generator's attribute indices the sampler draws from; ``photographic``: capture strength."""
        from ..synthesis import alpha_grid

        self.generator, self.attributes = generator, attributes
        self.photographic, self.seed = photographic, args.seed
        self.shared_capture_p = args.shared_capture_p
        grid = alpha_grid(args.alpha_min, args.alpha_max, args.alpha_step).numpy()
        self.sampler = StreamingPairSampler(identities, len(self.attributes), grid, seed=args.seed)

    @classmethod
    def embedded(cls, args, device: torch.device, identities: np.ndarray, spec: Optional[GeneratorSpec] = None):
        """The embedded renderer built from ``args`` (or ``spec``), drawing the attributes ``args.attributes`` names."""
        spec = spec or embedded_spec(args)
        generator = build_generator(spec, device)
        return cls(args, generator, identities, _attribute_indices(args.attributes, generator), spec.photographic)

    def batch(self, epoch: int, start: int, count: int, s: float) -> dict[str, torch.Tensor]:
        with stage("draw_pairs"):
            drawn = self.sampler.draw(epoch, start, count, s)
            identity = torch.from_numpy(drawn["identity"])
            attribute = torch.from_numpy(self.attributes[drawn["attribute"]])
            alpha_x, alpha_y = torch.from_numpy(drawn["alpha_x"]), torch.from_numpy(drawn["alpha_y"])
        with stage("render"):
            images = self.generator.render(torch.cat([identity, identity]), torch.cat([attribute, attribute]),
                                           torch.cat([alpha_x, alpha_y]))
        if self.photographic > 0:  # each image of a pair is its own photo: capture drawn per (seed, epoch, index)
            from ..synthesis.photographic import photographic

            with stage("capture"):
                images = photographic(images, _batch_generator(self.seed, epoch, start, 0x9407), self.photographic,
                                      settings_from=self.same_session(epoch, start, count))
        x, y = images.chunk(2)
        return {"x": x, "y": y, "alpha_x": alpha_x, "alpha_y": alpha_y, "identity": identity, "attribute": attribute}

    def same_session(self, epoch: int, start: int, count: int) -> Optional[torch.Tensor]:
        """The capture index for ``photographic(settings_from=)``: with probability ``shared_capture_p`` a pair's y is
        taken in x's session (same camera settings, as the frames of one video or the photos of one clinic visit);
        otherwise each image is its own photo (years apart, other cameras). ``None`` when no pair shares."""
        if self.shared_capture_p <= 0:
            return None
        shared = torch.rand(count, generator=_batch_generator(self.seed, epoch, start, 0x5E55)) < self.shared_capture_p
        index = torch.arange(2 * count)
        index[count:] = torch.where(shared, torch.arange(count), index[count:])
        return index


def _batch_generator(seed: int, epoch: int, start: int, stream: int) -> torch.Generator:
    """A CPU generator that depends only on (seed, epoch, first pair of the batch, stream): a worker can draw ahead
    and a resumed run draws the same."""
    state = np.random.SeedSequence([seed, epoch + 1, start, stream]).generate_state(2, np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 31 | int(state[1]) >> 1)


class CorpusPairs:
    """Pairs over the rows of a built corpus split; images decoded from the dataset's Arrow files."""

    def __init__(self, dataset, seed: int):
        self.dataset = dataset
        self.alpha = np.asarray(dataset["alpha"], dtype=np.float32)
        self.identity = np.asarray(dataset["identity"])
        self.attribute = _attribute_codes(dataset)
        self.sampler = CorpusPairSampler(self.identity, self.attribute, self.alpha, seed=seed)
        self._epoch, self._pairs = None, None
        self.max_pairs = self.sampler.num_rows

    def pairs(self, epoch: int, s: float) -> np.ndarray:
        if self._epoch != epoch:
            self._epoch, self._pairs = epoch, self.sampler.epoch_pairs(epoch, s)
        return self._pairs

    def batch(self, epoch: int, start: int, count: int, s: float) -> dict[str, torch.Tensor]:
        rows = self.pairs(epoch, s)[start : start + count]
        images = self.dataset[np.concatenate([rows[:, 0], rows[:, 1]]).tolist()]["image"]
        pixels = torch.stack([torch.from_numpy(np.asarray(im.convert("RGB"))).permute(2, 0, 1) for im in images]).float() / 255
        x, y = pixels.chunk(2)
        return {"x": x, "y": y, "alpha_x": torch.from_numpy(self.alpha[rows[:, 0]]),
                "alpha_y": torch.from_numpy(self.alpha[rows[:, 1]]),
                "identity": torch.from_numpy(self.identity[rows[:, 0]]),
                "attribute": torch.from_numpy(self.attribute[rows[:, 0]])}


def _attribute_indices(attributes: str, generator) -> np.ndarray:
    if attributes == "all":  # the paper's 43 (renderer 2.0.0's expression attributes are opt-in)
        from ..synthesis import ATTRIBUTE_NAMES

        return np.arange(len(ATTRIBUTE_NAMES))
    return np.array([generator.attribute_index(name.strip()) for name in attributes.split(",")])


def _attribute_codes(dataset) -> np.ndarray:
    values = dataset["attribute"]
    if len(values) and isinstance(values[0], str):
        names = {name: i for i, name in enumerate(sorted(set(values)))}
        return np.array([names[v] for v in values])
    return np.asarray(values, dtype=np.int64)


# Streaming from StyleGANs: one latent-edit generator or several mixed (each owning its attributes), shared by the
# training and validation sources and rendered on the training device inside the step.
class GeneratorPairs(StreamingPairs):
    """StreamingPairs over a prebuilt generator (a latent-edit StyleGAN or a mixture): same sampler, same batches."""

    def __init__(self, args, generator, identities: np.ndarray):
        # every attribute the generator owns; capture variation applies to any generator
        super().__init__(args, generator, identities, np.arange(len(generator.attribute_names)), args.photographic)


def build_data(args, accelerator):
    """(train source, validation source, number of training samples per epoch).

    Streaming: identities split 90/10 (seeded by the generator seed) so validation faces are never trained on; both
    sources render with the same generator on the training device (StyleGANs shared, being large; the embedded
    renderer built twice, being deterministic). Corpus: the built ``comface_synthetic`` train and validation splits (one process builds it).
    """
    if args.data_source == "stream":
        train_ids, val_ids = split_identities(args.num_identities, 0.1, seed=args.generator_seed)
        if uses_generator_specs(args):
            generator = build_stream_generator(args, accelerator.device)
            return GeneratorPairs(args, generator, train_ids), GeneratorPairs(args, generator, val_ids), args.samples_per_epoch
        train = StreamingPairs.embedded(args, accelerator.device, train_ids)
        val = StreamingPairs.embedded(args, accelerator.device, val_ids)
        return train, val, args.samples_per_epoch
    from dataset_builders.comface_synthetic import ComFaceSynthetic

    builder = ComFaceSynthetic(config_name=args.corpus_config, cache_dir=args.corpus_cache_dir)
    if builder.config.image_size != args.image_size:
        raise ValueError(
            f"The corpus configuration {args.corpus_config!r} holds {builder.config.image_size} px images but "
            f"--image_size is {args.image_size}: pass --image_size {builder.config.image_size} (or build the corpus at "
            f"{args.image_size} px)."
        )
    with accelerator.main_process_first():  # one process builds, the others read the finished (atomic) build
        builder.download_and_prepare()
    train, val = builder.as_dataset("train"), builder.as_dataset("validation")
    if train.features["image"].decode is False:
        raise ValueError("The corpus's image column must decode to images.")
    source = CorpusPairs(train, args.seed)
    return source, CorpusPairs(val, args.seed + 1), source.sampler.num_rows


def to_model_input(images: torch.Tensor, processor: ComFaceImageProcessor) -> torch.Tensor:
    """``[B, 3, S, S]`` in [0, 1] -> the model's input, normalised by the image processor itself
    (:meth:`~comface_hf.ComFaceImageProcessor.normalize_pixels`): training sees what inference will feed."""
    return processor.normalize_pixels(images)


class EpochBatches(torch.utils.data.Dataset):
    """Item k = this process's k-th micro-batch of an epoch: pairs, then the three augmented views (x~, x~', y~).

    Everything is a function of (seed, epoch, micro-step, process), so a DataLoader worker can produce batches ahead
    of the training loop and a resumed run produces the same ones.
    """

    def __init__(self, source, args, epoch: int, s: float, micro_steps: range, rank: int,
                 world: int, device: torch.device):
        self.source, self.args, self.epoch, self.s = source, args, epoch, s
        self.micro_steps, self.rank, self.world, self.device = micro_steps, rank, world, device
        self.augmentation = augmentation_config(args.augmentation, args.crop_scale_min)

    def __len__(self) -> int:
        return len(self.micro_steps)

    def __getitem__(self, k: int) -> dict[str, torch.Tensor]:
        micro, b = self.micro_steps[k], self.args.per_device_batch_size
        batch = self.source.batch(self.epoch, (micro * self.world + self.rank) * b, b, self.s)
        x, y = batch.pop("x").to(self.device), batch.pop("y").to(self.device)
        with stage("augment"):
            cfg = self.augmentation
            x1, geometry = augment_batch(x, step_generator(self.args.seed, self.epoch, micro, self.rank, 0), cfg,
                                         return_geometry=True)
            x2 = augment_batch(x, step_generator(self.args.seed, self.epoch, micro, self.rank, 1), cfg)
            # "shared": y is cropped and flipped as x1 (the view l compares it with), as real pairs are both aligned
            # into one face frame; its colour jitter stays its own.
            y = augment_batch(y, step_generator(self.args.seed, self.epoch, micro, self.rank, 2), cfg,
                              geometry=geometry if self.args.pair_geometry == "shared" else None)
        return {"x1": x1, "x2": x2, "y": y, "micro": micro, **batch}


def epoch_loader(source, args, epoch: int, s: float, first_micro: int, micro_per_epoch: int, accelerator):
    """Batches of one epoch; on a CPU a worker renders and augments the next batches while the model trains."""
    workers = args.num_workers
    if accelerator.device.type != "cpu" and isinstance(source, StreamingPairs):
        workers = 0  # the generator renders on the training device itself
    device = accelerator.device if workers == 0 else torch.device("cpu")
    dataset = EpochBatches(source, args, epoch, s, range(first_micro, micro_per_epoch), accelerator.process_index,
                           accelerator.num_processes, device)
    return torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=workers,
                                       prefetch_factor=2 if workers else None, worker_init_fn=_single_thread)


def _single_thread(_worker_id: int) -> None:
    torch.set_num_threads(1)  # a worker shares the cores with training; forked OpenMP pools can also hang


__all__ = ["CorpusPairs", "EpochBatches", "GeneratorPairs", "StreamingPairs", "build_data", "epoch_loader",
           "to_model_input"]
