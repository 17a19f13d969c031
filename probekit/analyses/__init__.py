"""Analyses over caches and results: similarity, alignment, fusion, noise-conditional classifier, fine-tuning,
checkpoint sweeps, t-SNE of a cell.
"""
