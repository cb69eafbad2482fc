"""The isegm evaluation protocol: click simulation, metrics, the click loop, one image's geometry (letterbox,
stretch, zoom-in, flip), the predictor, the feature cache, results files; no Lightning."""
