"""The small shared core: types, noise schedules, noise, pooling, precision, errors."""
