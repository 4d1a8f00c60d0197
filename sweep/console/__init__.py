"""What the user sees: option parsing, terminal progress and tables, experiment trackers."""
