"""zerolabel: zero-label object pre-labeling for Label Studio.

Importing the package imports nothing heavy: ``zerolabel.contract``, ``zerolabel.queue`` and
``zerolabel.labelstudio`` load no torch; ``zerolabel.vit``, ``zerolabel.pipeline`` and
``zerolabel.cad`` do.
"""
