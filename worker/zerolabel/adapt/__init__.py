"""Adapt a backbone to a team's own images and videos: DINO self-distillation, DoRA for video.

``zerolabel adapt INPUTS... -o OUT`` (:mod:`zerolabel.cli.adapt`) continues the training of a
DINO ViT on unlabeled images and videos and writes ``adapted-<digest>.pth``, a checkpoint every
entry point loads like any other (``--checkpoint``, ``ZEROLABEL_CHECKPOINT``, a project's
``checkpoint`` Extra param), with ``adapted-<digest>.json`` beside it.

- :mod:`zerolabel.adapt.config`: :class:`AdaptConfig`, every choice of a run.
- :mod:`zerolabel.adapt.schedules`: learning rate, weight decay, momentum, temperature by step.
- :mod:`zerolabel.adapt.dino`: projection head, loss, centre, EMA, gradient clipping.
- :mod:`zerolabel.adapt.dora`: prototypes, Sinkhorn-Knopp, tracking maps, multi-object masks.
- :mod:`zerolabel.adapt.crops`: the multi-crop views of images and clips.
- :mod:`zerolabel.adapt.data`: inputs checked, ordered and read (PyAV for videos).
- :mod:`zerolabel.adapt.network`: the ViT's training forwards (drop path, checkpointing).
- :mod:`zerolabel.adapt.views`: one step's views and loss pairs, masks included.
- :mod:`zerolabel.adapt.memory`: the memory a step needs, checked before training.
- :mod:`zerolabel.adapt.ddp`: torchrun's processes (DistributedDataParallel).
- :mod:`zerolabel.adapt.saving`: the resumable checkpoint, the adapted weights and metadata.
- :mod:`zerolabel.adapt.state`: one process's models, optimizer and centre, and its step.
- :mod:`zerolabel.adapt.training`: :func:`adapt`, the loop (checkpoints, signals, resume).

Importing this package loads nothing heavy (no torch).
"""
