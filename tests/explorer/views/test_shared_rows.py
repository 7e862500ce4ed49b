"""The rows RunReader.split_rows shares between the Triplets and Threshold tabs are read-only: every job of those
tabs takes them as they are (no copy, no write, no array handed to torch.from_numpy unguarded) and computes what it
computes from a writeable copy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from explorer.views.threshold.jobs import compute_errors, compute_extras, compute_roc
from explorer.views.triplets.jobs import census_job, examples_job
from tests.explorer.views.test_threshold import make_run
from trainer.store import SPLIT_HELDOUT, RunReader

NOOP = dict(progress=lambda *a, **k: None, partial=lambda *a, **k: None, is_cancelled=lambda: False)


@pytest.fixture
def strict_torch(monkeypatch):
    """torch.from_numpy / torch.as_tensor that refuse read-only arrays (torch warns only once a process, so a
    warning-as-error test would miss every site after the first)."""
    real_from, real_as = torch.from_numpy, torch.as_tensor

    def from_numpy(a):
        assert a.flags.writeable, "a read-only array reached torch.from_numpy"
        return real_from(a)

    def as_tensor(a, *args, **kw):
        assert not isinstance(a, np.ndarray) or a.flags.writeable, "a read-only array reached torch.as_tensor"
        return real_as(a, *args, **kw)

    monkeypatch.setattr(torch, "from_numpy", from_numpy)
    monkeypatch.setattr(torch, "as_tensor", as_tensor)


def _same(a, b):
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            _same(a[k], b[k])
    elif isinstance(a, (tuple, list)):
        assert len(a) == len(b)
        for u, v in zip(a, b):
            _same(u, v)
    elif isinstance(a, np.ndarray):
        np.testing.assert_array_equal(a, b)
    elif hasattr(a, "__dataclass_fields__"):
        _same(vars(a), vars(b))
    else:
        assert a == b or (a != a and b != b)


def test_the_tabs_jobs_take_the_shared_read_only_rows_and_agree_with_a_writeable_copy(tmp_path, strict_torch):
    run = RunReader(make_run(tmp_path))
    ids, x = run.split_rows(1, SPLIT_HELDOUT)
    assert not x.flags.writeable and not ids.flags.writeable
    before = x.copy()
    labels = np.asarray(run.samples.labels, np.int64)[ids]

    roc = compute_roc(run, 1, **NOOP)
    assert not roc.problem and roc.embeddings is x  # the shared array, not a copy
    census = census_job(run, 1, "heldout", 0.1, "cosine", **NOOP)
    assert not census.problem and census.x is x and census.census is not None
    metric, threshold = roc.metric, float(roc.roc.eer_threshold)
    for args in ((x, labels), (x.copy(), labels)):  # the shared rows, then a writeable copy: the same numbers
        extras = compute_extras(*args, metric, **NOOP)
        errors = compute_errors(*args, metric, threshold, **NOOP)
        examples = examples_job(args[0], labels, np.asarray(ids), "semihard", 0.1, "cosine", None, "hardest", 10,
                                **NOOP)
        if args[0] is x:
            shared = (extras, errors, examples)
    _same(shared[0]["cv"], extras["cv"])
    _same(shared[1], errors)
    _same(shared[2], examples)
    np.testing.assert_array_equal(x, before)  # nothing wrote into them
