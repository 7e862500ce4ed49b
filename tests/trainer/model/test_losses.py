"""Loss and miner registry: every loss trains, every miner speaks PML's tuple format, our own losses match
their formulas computed with plain loops, bad parameters and incompatible pairings are refused."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from trainer.model import losses as L


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: thread start-up dominates on a shared 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _blobs(n_classes: int = 4, per_class: int = 8, dim: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n_classes).repeat_interleave(per_class)
    centers = torch.randn(n_classes, dim, generator=g)
    return centers[labels] + torch.randn(len(labels), dim, generator=g), labels


def _value(t: torch.Tensor) -> float:
    return float(t.detach())


def _embed(model: torch.nn.Module, x: torch.Tensor, normalized: bool) -> torch.Tensor:
    e = model(x)
    return F.normalize(e, dim=1) if normalized else e


@pytest.mark.parametrize("name", list(L.LOSSES))
def test_every_loss_trains_with_its_default_miner(name: str) -> None:
    spec = L.LOSSES[name]
    x, y = _blobs()
    torch.manual_seed(1)
    model = torch.nn.Linear(16, 8)
    loss = L.build_loss(name, {}, embedding_dim=8, num_classes=4)
    miner = L.build_miner(spec.default_miner, {}, metric=spec.metric)
    learned = L.loss_parameters(loss)
    before_params = [p.detach().clone() for p in learned]
    opt = torch.optim.SGD([{"params": model.parameters()}, {"params": learned}], lr=0.05)

    def full_batch_loss() -> float:
        with torch.no_grad():
            return float(loss(_embed(model, x, spec.normalized), y))

    start = full_batch_loss()
    for _ in range(30):
        e = _embed(model, x, spec.normalized)
        value = loss(e, y, miner(e, y) if miner is not None else None)
        assert value.dim() == 0 and torch.isfinite(value)
        opt.zero_grad()
        value.backward()
        opt.step()
    end = full_batch_loss()
    assert math.isfinite(start) and end < 0.95 * start, (start, end)
    if spec.family in ("proxy", "classifier"):
        assert learned, "proxies / class weights must be parameters of the loss module"
        assert any(not torch.equal(a, b.detach()) for a, b in zip(before_params, learned))
    else:
        assert learned == []


def test_learned_beta_of_margin_loss_is_a_loss_parameter() -> None:
    loss = L.build_loss("margin", {"learn_beta": True}, embedding_dim=8, num_classes=5)
    (beta,) = L.loss_parameters(loss)
    assert beta.shape == (5,) and torch.allclose(beta, torch.full((5,), 1.2))


def _brute_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    total = 0.0
    for i in range(logits.shape[0]):
        row = [float(v) for v in logits[i]]
        top = max(row)
        log_sum = top + math.log(sum(math.exp(v - top) for v in row))
        total += log_sum - row[int(labels[i])]
    return total / logits.shape[0]


def test_center_loss_equals_its_formula() -> None:
    x, y = _blobs(n_classes=3, per_class=5, dim=6, seed=3)
    loss = L.build_loss("center_softmax", {"center_weight": 0.25}, embedding_dim=6, num_classes=3)
    inner = loss.inner
    with torch.no_grad():
        inner.centers.normal_()
    centers = inner.centers.detach()
    w, b = inner.classifier.weight.detach(), inner.classifier.bias.detach()
    center = 0.0
    for i in range(len(y)):
        c = centers[int(y[i])]
        center += 0.5 * sum((float(x[i, j]) - float(c[j])) ** 2 for j in range(x.shape[1]))
    center /= len(y)
    assert _value(inner.center_loss(x, y)) == pytest.approx(center, rel=1e-5)

    logits = torch.tensor([
        [sum(float(x[i, j]) * float(w[k, j]) for j in range(6)) + float(b[k]) for k in range(3)]
        for i in range(len(y))
    ])
    expected = _brute_cross_entropy(logits, y) + 0.25 * center
    assert _value(loss(x, y)) == pytest.approx(expected, rel=1e-5)


def test_center_loss_gradient_moves_centers_towards_their_samples() -> None:
    x, y = _blobs(n_classes=2, per_class=4, dim=3, seed=4)
    loss = L.build_loss("center_softmax", {"center_weight": 1.0}, embedding_dim=3, num_classes=2)
    inner = loss.inner
    inner.center_loss(x, y).backward()
    for k in range(2):
        members = [i for i in range(len(y)) if int(y[i]) == k]
        # d/dc_k mean_i 1/2 ||x_i - c_k||^2 = -sum_{i in k} (x_i - c_k) / B
        c = inner.centers.detach()[k]
        expected = [-sum(float(x[i, j]) - float(c[j]) for i in members) / len(y) for j in range(3)]
        assert inner.centers.grad[k].tolist() == pytest.approx(expected, rel=1e-5, abs=1e-7)


def test_softmax_loss_equals_cross_entropy_with_label_smoothing() -> None:
    x, y = _blobs(n_classes=3, per_class=4, dim=5, seed=5)
    loss = L.build_loss("softmax", {"label_smoothing": 0.3}, embedding_dim=5, num_classes=3)
    with torch.no_grad():
        logits = loss.inner.classifier(x)
    total = 0.0
    for i in range(len(y)):
        row = [float(v) for v in logits[i]]
        log_z = math.log(sum(math.exp(v) for v in row))
        log_p = [v - log_z for v in row]
        target = [0.3 / 3 + (0.7 if k == int(y[i]) else 0.0) for k in range(3)]
        total -= sum(t * lp for t, lp in zip(target, log_p))
    assert _value(loss(x, y)) == pytest.approx(total / len(y), rel=1e-5)


def _brute_triplets(e: torch.Tensor, y: torch.Tensor, metric: str, margin: float, kind: str) -> set:
    n = len(y)

    def d(i: int, j: int) -> float:
        a, b = e[i].tolist(), e[j].tolist()
        na, nb = math.sqrt(sum(v * v for v in a)), math.sqrt(sum(v * v for v in b))
        if metric == "cosine":
            return 1.0 - sum(u * v for u, v in zip(a, b)) / (na * nb)
        return math.sqrt(sum((u / na - v / nb) ** 2 for u, v in zip(a, b)))

    out = set()
    for a in range(n):
        for p in range(n):
            if p == a or y[p] != y[a]:
                continue
            for q in range(n):
                if y[q] == y[a]:
                    continue
                gap = d(a, q) - d(a, p)
                keep = {"easy": gap > margin, "semihard": 0 < gap <= margin, "hard": gap <= 0, "all": gap <= margin}
                if keep[kind]:
                    out.add((a, p, q))
    return out


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("kind", ["all", "easy", "semihard", "hard"])
def test_triplet_miners_follow_the_census_rules(kind: str, metric: str) -> None:
    x, y = _blobs(n_classes=3, per_class=4, dim=5, seed=6)
    miner = L.build_miner(f"{kind}_triplets", {"margin": 0.3}, metric=metric)
    a, p, n = miner(x, y)
    mined = set(zip(a.tolist(), p.tolist(), n.tolist()))
    assert mined == _brute_triplets(x, y, metric, 0.3, kind)
    assert mined, "the test data should produce some triplets of every kind"


@pytest.mark.parametrize("name", [m for m in L.MINERS if m != "none"])
def test_every_miner_returns_pml_tuples(name: str) -> None:
    spec = L.MINERS[name]
    x, y = _blobs(n_classes=4, per_class=6, dim=8, seed=7)
    e = F.normalize(x, dim=1)
    miner = L.build_miner(name, {}, metric="euclidean")
    out = miner(e, y)
    assert isinstance(out, tuple) and len(out) == (3 if spec.output == "triplets" else 4)
    for t in out:
        assert t.dtype == torch.int64 and t.dim() == 1
        assert ((t >= 0) & (t < len(y))).all()
    if spec.output == "triplets":
        a, p, n = out
        assert len(a) == len(p) == len(n) > 0
        assert (y[a] == y[p]).all() and (a != p).all() and (y[a] != y[n]).all()
    else:
        a1, p, a2, n = out
        assert len(a1) == len(p) and len(a2) == len(n) and len(a1) + len(a2) > 0
        assert (y[a1] == y[p]).all() and (a1 != p).all() and (y[a2] != y[n]).all()


def test_none_miner_is_none() -> None:
    assert L.build_miner("none", {}, metric="cosine") is None


def test_every_compatible_pairing_runs() -> None:
    """What compatible() lets through must work: each loss once with each miner it accepts."""
    x, y = _blobs(n_classes=4, per_class=4, dim=8, seed=8)
    for loss_name, spec in L.LOSSES.items():
        loss = L.build_loss(loss_name, {}, embedding_dim=8, num_classes=4)
        for miner_name in L.MINERS:
            if L.compatible(loss_name, miner_name) is not None:
                continue
            e = x.clone().requires_grad_(True)
            emb = F.normalize(e, dim=1) if spec.normalized else e
            miner = L.build_miner(miner_name, {}, metric=spec.metric)
            value = loss(emb, y, miner(emb, y) if miner is not None else None)
            assert value.dim() == 0 and torch.isfinite(value), (loss_name, miner_name)
            value.backward()
            assert torch.isfinite(e.grad).all(), (loss_name, miner_name)


def test_compatibility_rules() -> None:
    for name, spec in L.LOSSES.items():
        assert spec.default_miner in L.MINERS
        assert L.compatible(name, spec.default_miner) is None, name
        assert L.compatible(name, "none") is None
        why = L.compatible(name, "batch_hard")
        if spec.family in ("proxy", "classifier") or name == "ranked_list":
            assert why is not None and spec.title in why and "none" in why
        elif name != "triplet":
            assert why is None
    why = L.compatible("arcface", "multi_similarity")
    assert "class weights" in why
    assert "proxies" in L.compatible("proxy_anchor", "semihard_triplets")
    # easy triplets give a triplet loss of zero only when they clear the loss's margin
    assert "zero" in L.compatible("triplet", "easy_triplets")
    assert L.compatible("triplet", "easy_triplets", {"margin": 0.2}, {"margin": 0.05}) is None
    with pytest.raises(ValueError, match="unknown miner 'nope'"):
        L.compatible("triplet", "nope")


def test_miner_choice_is_ignored_by_losses_that_do_not_take_one() -> None:
    x, y = _blobs(n_classes=4, per_class=4, dim=8, seed=9)
    e = F.normalize(x, dim=1)
    tuples = L.build_miner("hard_triplets", {}, metric="cosine")(e, y)
    for name in ("proxy_anchor", "arcface", "softmax", "ranked_list"):
        loss = L.build_loss(name, {}, embedding_dim=8, num_classes=4)
        assert _value(loss(e, y, tuples)) == _value(loss(e, y))
    pair_loss = L.build_loss("triplet", {}, embedding_dim=8, num_classes=4)
    assert _value(pair_loss(e, y, tuples)) != _value(pair_loss(e, y))


def test_unknown_and_bad_params_are_refused() -> None:
    with pytest.raises(ValueError, match=r"loss 'triplet'.*'margn'.*margin, swap, smooth_loss"):
        L.build_loss("triplet", {"margn": 0.1}, embedding_dim=8, num_classes=4)
    with pytest.raises(ValueError, match=r"unknown loss 'tripplet'.*triplet"):
        L.build_loss("tripplet", {}, embedding_dim=8, num_classes=4)
    with pytest.raises(ValueError, match=r"loss 'softmax'.*'margin'.*label_smoothing"):
        L.build_loss("softmax", {"margin": 1.0}, embedding_dim=8, num_classes=4)
    with pytest.raises(ValueError, match=r"'margin' must be a float"):
        L.build_loss("triplet", {"margin": "big"}, embedding_dim=8, num_classes=4)
    with pytest.raises(ValueError, match=r"'swap' must be a bool"):
        L.build_loss("triplet", {"swap": 1}, embedding_dim=8, num_classes=4)
    with pytest.raises(ValueError, match=r"'margin' must be >= 0"):
        L.build_loss("triplet", {"margin": -0.1}, embedding_dim=8, num_classes=4)
    with pytest.raises(ValueError, match=r"'margin' must be a int"):
        L.build_loss("sphereface", {"margin": 2.5}, embedding_dim=8, num_classes=4)
    with pytest.raises(ValueError, match=r"miner 'multi_similarity'.*'eps'.*epsilon"):
        L.build_miner("multi_similarity", {"eps": 0.1}, metric="cosine")
    with pytest.raises(ValueError, match=r"'neg_strategy' must be one of"):
        L.build_miner("batch_easy_hard", {"neg_strategy": "medium"}, metric="cosine")
    with pytest.raises(ValueError, match=r"miner 'batch_easy_hard'.*semihard"):
        L.build_miner("batch_easy_hard", {"pos_strategy": "semihard"}, metric="cosine")
    with pytest.raises(ValueError, match=r"unknown metric"):
        L.build_miner("hard_triplets", {}, metric="manhattan")
    # integral floats from JSON are fine for int parameters, ints for floats
    loss = L.build_loss("sphereface", {"margin": 2.0, "scale": 1}, embedding_dim=8, num_classes=4)
    assert loss.params == {"margin": 2, "scale": 1.0, "lambda_min": 5.0} and isinstance(loss.params["margin"], int)


def test_margins_and_metrics() -> None:
    assert L.loss_margin("triplet", {"margin": 0.25}) == 0.25
    assert L.loss_margin("triplet", {}) == 0.1
    assert L.loss_margin("margin", {"margin": 0.2}) == pytest.approx(0.4)
    assert L.loss_margin("contrastive", {"pos_margin": 0.1, "neg_margin": 0.5}) == pytest.approx(0.4)
    assert L.loss_margin("arcface", {}) == L.DEFAULT_CENSUS_MARGIN
    with pytest.raises(ValueError, match="unknown parameter"):
        L.loss_margin("triplet", {"x": 1.0})
    for name, spec in L.LOSSES.items():
        assert L.loss_metric(name) == spec.metric in ("cosine", "euclidean")
        assert L.loss_margin(name, {}) >= 0


def test_registry_is_complete_and_documented() -> None:
    wanted = {
        "contrastive", "triplet", "n_pairs", "lifted_structure", "generalized_lifted_structure",
        "multi_similarity", "angular", "margin", "proxy_nca", "proxy_anchor", "softmax", "center_softmax",
        "normalized_softmax", "large_margin_softmax", "sphereface", "cosface", "arcface", "subcenter_arcface",
        "circle", "soft_triple", "ranked_list", "histogram", "supcon",
    }
    assert wanted <= set(L.LOSSES)
    assert L.LOSSES["margin"].default_miner == "distance_weighted"
    text = L.describe_all()
    for spec in [*L.LOSSES.values(), *L.MINERS.values()]:
        assert spec.title and spec.description
        assert spec.name in text
        for p in spec.params:
            assert p.help and p.name in text
            L.resolve_params(spec.name, spec.params, {})  # every default passes its own checks


@pytest.mark.filterwarnings("error")
def test_histogram_loss_indexes_pairs_not_rows() -> None:
    """PML's HistogramLoss indexes with a list of lists; we make it a tuple (no torch deprecation warning)."""
    x, y = _blobs(n_classes=3, per_class=4, dim=5, seed=10)
    loss = L.build_loss("histogram", {"n_bins": 20}, embedding_dim=5, num_classes=3)
    value = _value(loss(F.normalize(x, dim=1), y))
    assert 0.0 <= value <= 1.0


def test_histogram_loss_takes_equal_embeddings():
    """Two equal embeddings have cosine similarity 1, which PML's histogram put one bin past its end."""
    from trainer.model.losses import build_loss

    loss_fn = build_loss("histogram", {}, embedding_dim=8, num_classes=3)
    torch.manual_seed(0)
    emb = torch.nn.functional.normalize(torch.randn(6, 8), dim=1)
    emb = torch.cat([emb, emb])  # every sample twice: similarities of exactly 1 (and 1 + float error)
    labels = torch.tensor([0, 0, 1, 1, 2, 2] * 2)
    loss = loss_fn(emb.requires_grad_(), labels)
    assert torch.isfinite(loss)
    loss.backward()


@pytest.mark.parametrize("name", ["large_margin_softmax", "sphereface"])
def test_multiplicative_margins_are_annealed_as_the_authors_code_does(name) -> None:
    """Target logit (lambda cos + psi) / (1 + lambda), psi(theta) = (-1)^k cos(m theta) - 2k, lambda falling from 1000
    as 1000 / (1 + 0.1 step) to lambda_min; checked against the formula one value at a time."""
    loss = L.build_loss(name, {"margin": 4, "lambda_min": 5.0}, embedding_dim=6, num_classes=3)
    inner = loss.inner
    cosines = torch.tensor([0.95, 0.5, 0.0, -0.3, -0.9], dtype=torch.float64)

    def brute(c: float, lam: float) -> float:
        theta = math.acos(c)
        k = math.floor(theta / (math.pi / 4))
        psi = (-1) ** k * math.cos(4 * theta) - 2 * k
        return (lam * c + psi) / (1 + lam)

    for step, lam in ((0, 1000.0), (90, 100.0), (10_000, 5.0)):
        inner.anneal_step.fill_(step)
        inner.eval()  # evaluation does not advance the schedule
        got = inner.modify_cosine_of_target_classes(cosines.float())
        assert float(inner.anneal_step) == step
        for c, g in zip(cosines.tolist(), got.tolist()):
            assert g == pytest.approx(brute(c, lam), abs=1e-5)
    inner.train()
    inner.anneal_step.fill_(0)
    x, y = torch.randn(12, 6), torch.arange(3).repeat(4)
    for _ in range(3):
        loss(x, y).backward()
    assert float(inner.anneal_step) == 3  # one step per training forward, kept in the checkpoint
    state = loss.state_dict()
    assert float(state["inner.anneal_step"]) == 3
    del state["inner.anneal_step"]  # a checkpoint written before the schedule existed still loads
    loss.load_state_dict(state)


def _lifted_structure_by_loops(emb: torch.Tensor, labels: torch.Tensor, neg_margin: float, pos_margin: float,
                               scale: float) -> float:
    """Oh Song et al.'s loss as PML computes it, pair by pair: for each ordered positive pair (i, j), the
    log-sum-exp of neg_margin - d over the negatives of i and of j, plus d(i, j) - pos_margin, hinged, squared,
    halved; the mean over positive pairs. d: scale times the Euclidean distance on the unit sphere."""
    x = F.normalize(emb.double(), dim=1)
    n = len(labels)

    def d(a: int, b: int) -> float:
        return scale * float(torch.linalg.vector_norm(x[a] - x[b]))

    per_pair = []
    for i in range(n):
        for j in range(n):
            if i == j or labels[i] != labels[j]:
                continue
            terms = [neg_margin - d(a, k) for a in (i, j) for k in range(n) if labels[k] != labels[a]]
            smooth_max = math.log(sum(math.exp(t) for t in terms))
            per_pair.append(max(0.0, smooth_max + d(i, j) - pos_margin) ** 2 / 2)
    return sum(per_pair) / len(per_pair)


@pytest.mark.parametrize("scale", [1.0, 8.0, 2.5])
def test_lifted_structure_scales_unit_sphere_distances_as_the_loops_do(scale: float) -> None:
    emb, labels = _blobs(n_classes=3, per_class=4, dim=8)
    loss = L.build_loss("lifted_structure", {"distance_scale": scale}, embedding_dim=8, num_classes=3)
    assert _value(loss(emb, labels)) == pytest.approx(_lifted_structure_by_loops(emb, labels, 1.0, 0.0, scale),
                                                      rel=1e-5)


@pytest.mark.parametrize("name", ["lifted_structure", "generalized_lifted_structure"])
def test_lifted_structure_reaches_its_hinge_only_with_scaled_distances(name: str) -> None:
    """Classes on orthogonal axes (unit distance sqrt(2) between classes, 0 within): the smooth maximum over
    the ~100 negatives is log(n) + 1 - d, which stays above the hinge on the unit sphere's 0-2, so at
    distance_scale 1 the loss still penalises a perfect embedding; at the default, 8, it is zero."""
    labels = torch.arange(8).repeat_interleave(8)
    emb = torch.eye(16)[labels] * 3.0
    at_one = L.build_loss(name, {"distance_scale": 1.0}, embedding_dim=16, num_classes=8)
    default = L.build_loss(name, None, embedding_dim=16, num_classes=8)
    assert _value(at_one(emb, labels)) > 1.0
    assert _value(default(emb, labels)) == pytest.approx(0.0, abs=1e-6)
    assert {p.name: p.default for p in L.LOSSES[name].params}["distance_scale"] == 8.0
    # the census margin is the loss's neg_margin - pos_margin in unit-sphere distances
    assert L.loss_margin(name, {}) == pytest.approx(1.0 / 8.0)
    assert L.loss_margin(name, {"distance_scale": 1.0}) == pytest.approx(1.0)


def _generalized_lifted_structure_by_loops(emb: torch.Tensor, labels: torch.Tensor, neg_margin: float,
                                           pos_margin: float, scale: float) -> float:
    """Per anchor: log-sum-exp of d - pos_margin over its positives plus log-sum-exp of neg_margin - d over its
    negatives, hinged at 0; the mean over anchors. d: scale times the Euclidean distance on the unit sphere."""
    x = F.normalize(emb.double(), dim=1)
    n = len(labels)
    per_anchor = []
    for i in range(n):
        pos = [scale * float(torch.linalg.vector_norm(x[i] - x[j])) - pos_margin
               for j in range(n) if j != i and labels[j] == labels[i]]
        neg = [neg_margin - scale * float(torch.linalg.vector_norm(x[i] - x[k]))
               for k in range(n) if labels[k] != labels[i]]
        lse = sum(math.log(sum(math.exp(t) for t in ts)) for ts in (pos, neg))
        per_anchor.append(max(0.0, lse))
    return sum(per_anchor) / n


@pytest.mark.parametrize("scale", [1.0, 8.0, 2.5])
def test_generalized_lifted_structure_scales_unit_sphere_distances_as_the_loops_do(scale: float) -> None:
    emb, labels = _blobs(n_classes=3, per_class=4, dim=8, seed=1)
    loss = L.build_loss("generalized_lifted_structure", {"distance_scale": scale, "neg_margin": 1.5},
                        embedding_dim=8, num_classes=3)
    want = _generalized_lifted_structure_by_loops(emb, labels, 1.5, 0.0, scale)
    assert _value(loss(emb, labels)) == pytest.approx(want, rel=1e-5)
    assert L.loss_margin("generalized_lifted_structure", {"distance_scale": scale}) == pytest.approx(1.0 / scale)
