"""Dense analyses over spatial caches (``--pooling spatialS``): per-pixel segmentation probes and
keypoint correspondence, each swept over every (t, layer) cell and chosen on validation.
"""
