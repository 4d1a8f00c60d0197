"""Why do the confirm numbers (test split) trail the search's (validation split)? Trains the two
configurations `confirm` compared on Rotten Tomatoes, at the study's trial settings, and scores every
trained model on the whole validation and test splits (2,000 snippets each) and on the 1,000-snippet
samples of them that the search and confirm scored, so that a gap is a property of the splits, not of
two different runs. A bag-of-words logistic regression on the same train split is a reference that
no search selected.

    python results/evidence-v2/split_gap.py [--seeds 1,2]
"""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np

from sweep.core.quiet import quiet_libraries
from sweep.data.batches import sample_indices
from sweep.data.spec import find_study_file, load_spec
from sweep.data.tasks import load_task
from sweep.engine.train import run_trial

ARMS = {"plain LoRA": (6.8e-4, 1.0, 8), "LoRA+": (4.7e-4, 5.0, 8)}  # the confirm arms, see README


def bag_of_words(train, splits) -> list[float]:
    """Accuracy of a tf-idf logistic regression trained on `train`, on each split."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    def texts(split):
        return split.text[0 : len(split.label)]

    vectors = TfidfVectorizer(ngram_range=(1, 2), min_df=2).fit(texts(train))
    model = LogisticRegression(max_iter=2000, C=4).fit(vectors.transform(texts(train)), train.label)
    return [float((model.predict(vectors.transform(texts(s))) == s.label).mean()) for s in splits]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="1,2")
    args = parser.parse_args()
    quiet_libraries()
    spec = load_spec(find_study_file("evidence-minilm-rotten-tomatoes"))
    task = load_task("rotten-tomatoes")
    # One trained model scores every split: the whole validation and test splits, and the samples of
    # eval_limit snippets of each that the search (validation) and confirm (test) scored.
    n = spec.base.eval_limit
    samples = {f"{name}_{n}": split.take(sample_indices(split.label, n, stratified=True))
               for name, split in (("validation", task.validation), ("test", task.test))}
    scored = dataclasses.replace(task, extra_validation={"test": task.test, **samples})
    columns = ("validation", "test", f"validation_{n}", f"test_{n}")
    print(f"{'run':28}" + "".join(f"{c:>17}" for c in columns))
    splits = [task.validation, task.test, *samples.values()]
    reference = bag_of_words(task.train, splits)
    print(f"{'tf-idf logistic regression':28}" + "".join(f"{v:17.4f}" for v in reference))
    rows = []
    for name, (eta_a, lam, rank) in ARMS.items():
        for seed in (int(s) for s in args.seeds.split(",")):
            cfg = spec.base.replace(eta_a=eta_a, lam=lam, rank=rank, seed=seed, eval_limit=None)
            metrics = run_trial(cfg, task=scored).metrics
            rows.append([metrics["accuracy"], *(metrics[f"accuracy_{c}"] for c in columns[1:])])
            print(f"{name + f', seed {seed}':28}" + "".join(f"{v:17.4f}" for v in rows[-1]))
    mean = np.mean(rows, axis=0)
    print(f"{'mean of the fine-tuned runs':28}" + "".join(f"{v:17.4f}" for v in mean))
    print(f"gap, whole splits: {100 * (mean[0] - mean[1]):+.2f} points; the samples the search and confirm "
          f"scored: {100 * (mean[2] - mean[3]):+.2f} points")


if __name__ == "__main__":
    main()
