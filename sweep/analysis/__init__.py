"""Reading results: stored trials to tables, plots, importance and exported training configs."""
