"""Answers calibrated to their noise: per-example outcomes stored with a trial, the paired standard error
of two trials scored on the same examples, seed-to-seed noise from replicates, and the plateau's centre
recommended rather than its edge."""

import pytest

from sweep.outcomes import arrays
from sweep.spec import load_spec
from sweep.stored import StoredStudy, trials_frame
from sweep.tasks import load_task
from sweep.train import run_trial


def test_a_real_trial_stores_its_per_example_outcomes(tiny_cfg, tmp_path):
    url = f"sqlite:///{tmp_path}/sweep.db"
    spec = load_spec(None, {"model": tiny_cfg.model, "task": tiny_cfg.task, "sampler": "random",
                            "storage": url, "max_steps": 3, "max_length": 32, "batch_size": 16,
                            "device": "cpu", "eval_limit": 40})
    store = StoredStudy.create_or_load(spec)
    running = store.ask(spec, draw=0)
    result = run_trial(running.config(spec))
    running.record(result)
    store.tell(running, "COMPLETE", result.metric)
    stored = trials_frame(url)["outcomes"].iloc[0]
    n = min(40, len(load_task(tiny_cfg.task).validation))
    assert stored["n"] == n
    correct = arrays(stored)["correct"]
    assert correct.shape == (n,) and correct.mean() == pytest.approx(result.metric)
