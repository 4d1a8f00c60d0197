"""The study wing: Optuna storage and search, the workers' trial loop, confirm runs, reports."""
