"""Foundation: errors, schema helpers, statistics, metrics, signals, hardware; knows nothing of trials."""
