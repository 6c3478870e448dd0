"""The one place that knows timm: backbones and weights, input preprocessing, patch features
and crop descriptors."""
