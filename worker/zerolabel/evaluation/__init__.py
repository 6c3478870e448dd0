"""Evaluation: CorLoc and COCO AP/AR, ground truth readers."""
