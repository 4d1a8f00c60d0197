"""Real labelled data sets that packages ship, for work with no network."""

TASKS: dict = {}


def load(name):
    raise KeyError(name)
