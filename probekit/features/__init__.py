"""Feature extraction: the extraction loop, the HDF5 feature cache, sharded (torchrun) runs."""
