"""The C x K sampler and the class-disjoint split."""

from __future__ import annotations

import numpy as np
import pytest

from trainer.data.loader import ClassBalancedBatchSampler
from trainer.data.split import class_disjoint_split
from trainer.store import SPLIT_HELDOUT, SPLIT_TRAIN


def _labels(counts):
    return np.concatenate([np.full(c, i) for i, c in enumerate(counts)])


def test_batches_hold_c_classes_times_k_images():
    labels = _labels([10, 7, 3, 12, 5, 9])
    s = ClassBalancedBatchSampler(labels, 4, 3, batches_per_epoch=25, seed=1)
    s.set_epoch(1)
    batches = list(s)
    assert len(batches) == len(s) == 25
    for b in batches:
        lab = labels[b]
        classes, counts = np.unique(lab, return_counts=True)
        assert len(classes) == 4 and (counts == 3).all()
        # without replacement where the class has enough images
        for c in classes:
            members = np.asarray(b)[lab == c]
            if (labels == c).sum() >= 3:
                assert len(set(members.tolist())) == 3


def test_every_usable_class_is_drawn_evenly():
    labels = _labels([8] * 10)
    s = ClassBalancedBatchSampler(labels, 5, 2, batches_per_epoch=40, seed=0)
    s.set_epoch(3)
    seen = np.bincount(labels[np.concatenate([np.asarray(b) for b in s])], minlength=10) // 2  # K = 2
    # classes are dealt from shuffled decks: every class appears 40*5/10 = 20 times, give or take a deck boundary
    assert seen.min() >= 18 and seen.max() <= 22


def test_batches_are_a_function_of_seed_and_epoch():
    labels = _labels([6, 6, 6, 6])
    a = ClassBalancedBatchSampler(labels, 2, 2, batches_per_epoch=5, seed=7)
    b = ClassBalancedBatchSampler(labels, 2, 2, batches_per_epoch=5, seed=7)
    a.set_epoch(2)
    b.load_state_dict({"seed": 7, "epoch": 2})
    assert list(a) == list(b)
    b.set_epoch(3)
    assert list(a) != list(b)


def test_singleton_classes_are_never_drawn_and_too_few_classes_refused():
    labels = _labels([5, 1, 5])
    s = ClassBalancedBatchSampler(labels, 3, 2, batches_per_epoch=10)
    s.set_epoch(1)
    assert 1 not in set(labels[np.concatenate([np.asarray(b) for b in s])])
    with pytest.raises(ValueError, match="at least 2 classes"):
        ClassBalancedBatchSampler(_labels([5, 1]), 2, 2)
    with pytest.raises(ValueError, match="K >= 2"):
        ClassBalancedBatchSampler(labels, 2, 1)


def test_ranks_split_each_global_batch_by_class_blocks():
    labels = _labels([6] * 8)
    full = ClassBalancedBatchSampler(labels, 4, 2, batches_per_epoch=6, seed=3)
    r0 = ClassBalancedBatchSampler(labels, 4, 2, batches_per_epoch=6, seed=3, rank=0, world_size=2)
    r1 = ClassBalancedBatchSampler(labels, 4, 2, batches_per_epoch=6, seed=3, rank=1, world_size=2)
    for s in (full, r0, r1):
        s.set_epoch(1)
    for g, a, b in zip(full, r0, r1):
        assert sorted(a + b) == sorted(g)
        assert len(np.unique(labels[a])) == 2 and len(np.unique(labels[b])) == 2


def test_class_disjoint_split_is_seeded_and_disjoint():
    labels = _labels([3] * 10)
    classes = [str(i) for i in range(10)]
    split = class_disjoint_split(labels, classes, holdout_fraction=0.3, seed=5)
    held = set(labels[split == SPLIT_HELDOUT])
    train = set(labels[split == SPLIT_TRAIN])
    assert len(held) == 3 and not held & train
    assert np.array_equal(split, class_disjoint_split(labels, classes, holdout_fraction=0.3, seed=5))
    explicit = class_disjoint_split(labels, classes, holdout_classes=["5", "6", "7", "8", "9"])
    assert set(labels[explicit == SPLIT_HELDOUT]) == {5, 6, 7, 8, 9}
    with pytest.raises(ValueError, match="not in the data"):
        class_disjoint_split(labels, classes, holdout_classes=["x"])


def test_the_held_out_classes_shown_before_training_are_the_ones_the_split_holds_out():
    from trainer.data.split import class_disjoint_split, held_out_classes
    from trainer.store import SPLIT_HELDOUT

    rng = np.random.default_rng(2)
    for _ in range(100):
        n = int(rng.integers(2, 30))
        classes = [f"c{i}" for i in range(n)]
        fraction, seed = float(rng.uniform(0.05, 0.95)), int(rng.integers(0, 1000))
        split = class_disjoint_split(np.arange(n), classes, holdout_fraction=fraction, seed=seed)
        assert held_out_classes(classes, holdout_fraction=fraction, seed=seed) == \
            {classes[i] for i in range(n) if split[i] == SPLIT_HELDOUT}
    assert held_out_classes(["a", "b", "c"], holdout_classes=("b", "zz")) == {"b"}
    assert held_out_classes(["a", "b"], holdout_fraction=1.5) == set()
