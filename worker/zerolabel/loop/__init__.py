"""The labeling loop: predict folders, pre-label projects, pseudo-classes, project evaluation."""
