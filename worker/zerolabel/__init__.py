"""zerolabel: zero-label object pre-labeling for Label Studio.

Importing the package imports nothing heavy: ``zerolabel.contract``, ``zerolabel.queue`` and
``zerolabel.labelstudio`` load no torch; ``zerolabel.vit`` and ``zerolabel.pipeline`` do,
and ``zerolabel.cad`` loads torchvision's detection models only when one of its names is used.
"""
