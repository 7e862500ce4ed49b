"""Registry of every metric-learning loss and miner the app offers, with literature defaults and GUI help.

pytorch-metric-learning (PML) provides almost everything; we write only the plain softmax classifier and
center loss + softmax, which PML lacks. Every loss is wrapped in :class:`MetricLoss` so the trainer calls
``loss(embeddings, labels, indices_tuple)`` the same way and finds proxies / class weights with
:func:`loss_parameters` (they get their own optimizer parameter group).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pytorch_metric_learning import distances, losses, miners, regularizers
from pytorch_metric_learning.losses import histogram_loss as _pml_histogram
from torch import nn

ParamValue = float | int | bool | str
Metric = Literal["cosine", "euclidean"]
Family = Literal["pair", "proxy", "classifier"]

# Census margin for losses that enforce no gap between d(a,n) and d(a,p) themselves.
DEFAULT_CENSUS_MARGIN = 0.1


@dataclass(frozen=True)
class Param:
    """One tunable parameter: its default (which also fixes its type) and a one-line help for the GUI."""

    name: str
    default: ParamValue
    help: str
    choices: tuple[str, ...] = ()  # allowed values of a str parameter
    minimum: float | None = None
    maximum: float | None = None


@dataclass(frozen=True)
class LossSpec:
    """A loss as the GUI and the trainer see it (see docs/ARCHITECTURE.md)."""

    name: str
    title: str
    description: str
    params: tuple[Param, ...]
    family: Family  # "pair": compares embeddings with each other; "proxy"/"classifier": with learned vectors
    normalized: bool  # does the model L2-normalise embeddings for this loss?
    metric: Metric  # the distance the loss works with: for neighbours and the triplet census
    default_miner: str = "none"
    accepts_miner: bool = True  # False: mined tuples would be ignored (see compatible())
    reference: str = ""
    build: Callable[[dict[str, Any], int, int], nn.Module] | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class MinerSpec:
    """A miner: which pairs/triplets of the batch the loss is computed on."""

    name: str
    title: str
    description: str
    params: tuple[Param, ...]
    output: Literal["none", "pairs", "triplets"]
    build: Callable[[dict[str, Any], Metric], Any] | None = field(default=None, repr=False, compare=False)


# ----------------------------------------------------------------------------------------------------------
# Our own losses (PML has no plain softmax classifier and no center loss)


class SoftmaxLoss(nn.Module):
    """Cross-entropy on a linear classifier over the embedding: the classification baseline."""

    def __init__(self, embedding_dim: int, num_classes: int, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.classifier = nn.Linear(embedding_dim, num_classes)
        self.label_smoothing = float(label_smoothing)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor, indices_tuple: Any = None) -> torch.Tensor:
        logits = self.classifier(embeddings)
        return F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing)


class CenterSoftmaxLoss(SoftmaxLoss):
    """Softmax cross-entropy + weight * center loss (Wen et al. 2016): pulls each embedding to its class center.

    Center loss here is mean_i 1/2 ||x_i - c_{y_i}||^2; the centers are parameters learned by the loss optimizer.
    """

    def __init__(
        self, embedding_dim: int, num_classes: int, center_weight: float = 0.003, label_smoothing: float = 0.0
    ) -> None:
        super().__init__(embedding_dim, num_classes, label_smoothing)
        self.center_weight = float(center_weight)
        self.centers = nn.Parameter(torch.randn(num_classes, embedding_dim) / math.sqrt(embedding_dim))

    def center_loss(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """mean over the batch of half the squared distance of each embedding to its class center."""
        diff = embeddings - self.centers.to(embeddings.dtype)[labels]
        return 0.5 * diff.pow(2).sum(dim=1).mean()

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor, indices_tuple: Any = None) -> torch.Tensor:
        return super().forward(embeddings, labels) + self.center_weight * self.center_loss(embeddings, labels)


LAMBDA_START = 1000.0  # the annealed weight of the plain cosine, as in the SphereFace authors' code
LAMBDA_DECAY = 0.1  # per training step: lambda = max(lambda_min, LAMBDA_START / (1 + LAMBDA_DECAY * step))


class _ExactMarginTermsMixin:
    """PML's L-Softmax builds its multiple-angle coefficients by passing tensors to scipy.special.binom, which
    NumPy 2 deprecates; the same coefficients computed with math.comb.

    The multiplicative margin is annealed as both papers' own code does: the target logit is
    (lambda cos(theta) + psi(theta)) / (1 + lambda), with lambda falling from 1000 to ``lambda_min``; PML applies
    psi at full strength from the first step, and from random weights neither loss then learns at all (held-out
    MAP@R below the untrained network on every benchmark task)."""

    def setup_annealing(self, lambda_min: float) -> None:
        self.lambda_min = float(lambda_min)
        self.register_buffer("anneal_step", torch.zeros((), dtype=torch.float64))
        self.register_load_state_dict_pre_hook(self._default_step)

    @staticmethod
    def _default_step(module, state_dict, prefix, *args) -> None:
        state_dict.setdefault(prefix + "anneal_step", torch.zeros((), dtype=torch.float64))  # older checkpoints

    def current_lambda(self) -> float:
        return max(self.lambda_min, LAMBDA_START / (1.0 + LAMBDA_DECAY * float(self.anneal_step)))

    def modify_cosine_of_target_classes(self, cosine_of_target_classes):
        psi = super().modify_cosine_of_target_classes(cosine_of_target_classes)
        lam = self.current_lambda()
        if self.training and torch.is_grad_enabled():
            self.anneal_step += 1
        return (lam * cosine_of_target_classes + psi) / (1.0 + lam)

    def init_margin(self) -> None:
        self.margin = int(self.margin)
        self.max_n = self.margin // 2
        ns = list(range(self.max_n + 1))
        self.n_range = torch.tensor(ns)
        self.margin_choose_n = torch.tensor([float(math.comb(self.margin, 2 * n)) for n in ns])
        self.cos_powers = torch.tensor([self.margin - 2 * n for n in ns])
        self.alternating = torch.tensor([(-1) ** n for n in ns])


class LargeMarginSoftmaxLoss(_ExactMarginTermsMixin, losses.LargeMarginSoftmaxLoss):
    """PML's L-Softmax, annealed, without the NumPy deprecation warning."""

    def __init__(self, *args, lambda_min: float = 5.0, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.setup_annealing(lambda_min)


class SphereFaceLoss(_ExactMarginTermsMixin, losses.SphereFaceLoss):
    """PML's SphereFace (A-Softmax), annealed, without the NumPy deprecation warning."""

    def __init__(self, *args, lambda_min: float = 5.0, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.setup_annealing(lambda_min)


def _index_pairs_with_tuple() -> None:
    """PML's HistogramLoss indexes its distance matrix with a list of two lists, which torch deprecates (it
    would become a tensor index and select whole rows); returning a tuple keeps today's pair indexing."""
    original = _pml_histogram.filter_pairs
    if getattr(original, "_returns_tuple", False):
        return

    def filter_pairs(*tensors: torch.Tensor) -> tuple[list[int], ...]:
        return tuple(original(*tensors))

    filter_pairs._returns_tuple = True  # type: ignore[attr-defined]
    _pml_histogram.filter_pairs = filter_pairs


_index_pairs_with_tuple()


class MetricLoss(nn.Module):
    """Uniform wrapper: ``loss(embeddings, labels, indices_tuple=None) -> scalar``; remembers its spec and params."""

    def __init__(self, spec: LossSpec, params: dict[str, Any], inner: nn.Module) -> None:
        super().__init__()
        self.spec = spec
        self.params = dict(params)
        self.inner = inner

    def forward(
        self, embeddings: torch.Tensor, labels: torch.Tensor, indices_tuple: tuple[torch.Tensor, ...] | None = None
    ) -> torch.Tensor:
        if not self.spec.accepts_miner:
            indices_tuple = None  # proxy / classifier / ranked-list losses use the whole batch (see compatible())
        return self.inner(embeddings, labels, indices_tuple)

    def extra_repr(self) -> str:
        return f"{self.spec.name}: {self.params}"


# ----------------------------------------------------------------------------------------------------------
# Distances


def _cosine() -> distances.BaseDistance:
    return distances.CosineSimilarity()


class _BinnableCosine(distances.CosineSimilarity):
    """Cosine similarity kept below 1 by a hair. PML's HistogramLoss puts a similarity of exactly 1 (two equal
    embeddings; float error can even give 1 + 1e-7) into bin n_bins + 1, one past its array, and fails with
    "index 101 is out of bounds": seen on the photos benchmark when augmentation produced equal crops."""

    def compute_mat(self, query_emb, ref_emb):
        return super().compute_mat(query_emb, ref_emb).clamp(-1.0, 1.0 - 1e-6)

    def pairwise_distance(self, query_emb, ref_emb):
        return super().pairwise_distance(query_emb, ref_emb).clamp(-1.0, 1.0 - 1e-6)


def _unit_euclidean() -> distances.BaseDistance:
    return distances.LpDistance(p=2, power=1, normalize_embeddings=True)


class _ScaledUnitEuclidean(distances.LpDistance):
    """Euclidean distance on the unit sphere times a constant: the distances a loss sees lie in [0, 2 * scale]."""

    def __init__(self, scale: float):
        super().__init__(p=2, power=1, normalize_embeddings=True)
        self.scale = float(scale)

    def compute_mat(self, query_emb: torch.Tensor, ref_emb: torch.Tensor) -> torch.Tensor:
        return self.scale * super().compute_mat(query_emb, ref_emb)

    def pairwise_distance(self, query_emb: torch.Tensor, ref_emb: torch.Tensor) -> torch.Tensor:
        return self.scale * super().pairwise_distance(query_emb, ref_emb)


def metric_distance(metric: Metric) -> distances.BaseDistance:
    """The PML distance object for a metric name: cosine similarity or Euclidean distance on the unit sphere."""
    if metric == "cosine":
        return _cosine()
    if metric == "euclidean":
        return _unit_euclidean()
    raise ValueError(f"unknown metric {metric!r}; expected 'cosine' or 'euclidean'")


# ----------------------------------------------------------------------------------------------------------
# The loss registry


def P(name: str, default: ParamValue, help: str, **kw: Any) -> Param:  # noqa: N802 - short table constructor
    return Param(name, default, help, **kw)


_MARGIN_DEG = P("margin", 28.6, "additive angular margin in degrees (0.5 rad = 28.6 deg)", minimum=0, maximum=90)
_LAMBDA_MIN = P("lambda_min", 5.0, "final weight of the plain cosine in the target logit (lambda cos + psi) / "
                "(1 + lambda); lambda starts at 1000 and decays as 1000 / (1 + 0.1 step), as in the authors' code "
                "(0 = the full margin at once)", minimum=0)
_SCALE = P("scale", 64.0, "logit scale s: cosines are multiplied by it before the softmax", minimum=0)


def _spec(**kw: Any) -> LossSpec:
    return LossSpec(**kw)


# the two lifted structures' parameters: margins on distances scaled by distance_scale (bench/README.md
# "recipe.lifted_scale": at 1 the log-sum-exp over a batch's ~120 negatives never falls below the hinge)
_LIFTED_PARAMS = (
    P("neg_margin", 1.0, "negative pairs closer than this contribute (a scaled distance, as the loss sees it)", minimum=0),
    P("pos_margin", 0.0, "positive pairs farther apart than this contribute (a scaled distance)", minimum=0),
    P("distance_scale", 8.0, "unit-sphere distances (0-2) are multiplied by this before the margins and the "
      "log-sum-exp over negatives; at 1 that log-sum-exp never falls below the hinge", minimum=0.1),
)

_LOSS_LIST: list[LossSpec] = [
    _spec(
        name="contrastive", title="Contrastive",
        description="Pulls same-class pairs together and pushes other-class pairs beyond a margin.",
        params=(
            P("pos_margin", 0.0, "positive pairs farther apart than this are penalised", minimum=0),
            P("neg_margin", 0.4, "negative pairs closer than this are penalised (0.3-0.5 on the unit sphere)", minimum=0),
        ),
        family="pair", normalized=True, metric="euclidean", default_miner="none",
        reference="Hadsell et al. 2006; margins as tuned in Musgrave et al. 2020",
        build=lambda p, d, c: losses.ContrastiveLoss(p["pos_margin"], p["neg_margin"], distance=_unit_euclidean()),
    ),
    _spec(
        name="triplet", title="Triplet margin",
        description="Each anchor must be closer to a same-class sample than to an other-class one, by a margin.",
        params=(
            P("margin", 0.1, "required gap d(a,n) - d(a,p)", minimum=0),
            P("swap", False, "also use the positive as anchor when it is closer to the negative"),
            P("smooth_loss", False, "soft-plus instead of the hinge"),
        ),
        family="pair", normalized=True, metric="euclidean", default_miner="semihard_triplets",
        reference="Schroff et al. 2015 (FaceNet)",
        build=lambda p, d, c: losses.TripletMarginLoss(
            margin=p["margin"], swap=p["swap"], smooth_loss=p["smooth_loss"], distance=_unit_euclidean()
        ),
    ),
    _spec(
        name="n_pairs", title="N-pair",
        description="One positive pair per class in the batch; the other classes' positives serve as negatives.",
        params=(P("l2_reg_weight", 0.002, "weight of the squared embedding norm penalty (keeps norms small)", minimum=0),),
        family="pair", normalized=False, metric="cosine", default_miner="none",
        reference="Sohn 2016",
        build=lambda p, d, c: losses.NPairsLoss(
            distance=distances.DotProductSimilarity(normalize_embeddings=False),
            embedding_regularizer=regularizers.LpRegularizer(p=2, power=2),
            embedding_reg_weight=p["l2_reg_weight"],
        ),
    ),
    _spec(
        name="lifted_structure", title="Lifted structure",
        description="Each positive pair against a smooth maximum over all negatives of both its samples.",
        params=_LIFTED_PARAMS,
        family="pair", normalized=True, metric="euclidean", default_miner="none",
        reference="Oh Song et al. 2016",
        build=lambda p, d, c: losses.LiftedStructureLoss(
            p["neg_margin"], p["pos_margin"], distance=_ScaledUnitEuclidean(p["distance_scale"])
        ),
    ),
    _spec(
        name="generalized_lifted_structure", title="Generalized lifted structure",
        description="Per anchor: log-sum-exp over its positives plus log-sum-exp over its negatives, with margins.",
        params=_LIFTED_PARAMS,
        family="pair", normalized=True, metric="euclidean", default_miner="none",
        reference="Hermans et al. 2017",
        build=lambda p, d, c: losses.GeneralizedLiftedStructureLoss(
            p["neg_margin"], p["pos_margin"], distance=_ScaledUnitEuclidean(p["distance_scale"])
        ),
    ),
    _spec(
        name="multi_similarity", title="Multi-similarity",
        description="Weights each pair by its similarity relative to the others: focuses on informative pairs.",
        params=(
            P("alpha", 2.0, "weight of positive pairs", minimum=0),
            P("beta", 50.0, "weight of negative pairs", minimum=0),
            P("base", 0.5, "similarity threshold lambda around which pairs are weighted"),
        ),
        family="pair", normalized=True, metric="cosine", default_miner="multi_similarity",
        reference="Wang et al. 2019",
        build=lambda p, d, c: losses.MultiSimilarityLoss(p["alpha"], p["beta"], p["base"], distance=_cosine()),
    ),
    _spec(
        name="threshold_consistent", title="Multi-similarity + threshold-consistent margin",
        description="Multi-similarity with the TCM regularizer: hard positive pairs below one similarity and hard "
                    "negatives above another are penalised, so that one threshold treats the classes more evenly.",
        params=(
            P("alpha", 2.0, "multi-similarity: weight of positive pairs", minimum=0),
            P("beta", 50.0, "multi-similarity: weight of negative pairs", minimum=0),
            P("base", 0.5, "multi-similarity: similarity threshold lambda around which pairs are weighted"),
            P("lambda_plus", 1.0, "TCM: weight of the positive-pair term", minimum=0),
            P("lambda_minus", 1.0, "TCM: weight of the negative-pair term", minimum=0),
            P("margin_plus", 0.9, "TCM: positive pairs less similar than this are penalised (cosine)",
              minimum=-1, maximum=1),
            P("margin_minus", 0.5, "TCM: negative pairs more similar than this are penalised (cosine)",
              minimum=-1, maximum=1),
        ),
        family="pair", normalized=True, metric="cosine", default_miner="multi_similarity",
        reference="Zhang et al. 2024 (threshold-consistent margin loss, ICLR); Wang et al. 2019",
        build=lambda p, d, c: losses.MultipleLosses({
            "ms": losses.MultiSimilarityLoss(p["alpha"], p["beta"], p["base"], distance=_cosine()),
            "tcm": losses.ThresholdConsistentMarginLoss(p["lambda_plus"], p["lambda_minus"], p["margin_plus"],
                                                        p["margin_minus"], distance=_cosine()),
        }),
    ),
    _spec(
        name="angular", title="Angular",
        description="Constrains the angle at the negative of each triplet, which is scale-invariant.",
        params=(P("alpha", 40.0, "upper bound of the angle at the negative, in degrees (36-55 in the paper)",
                  minimum=0, maximum=90),),
        family="pair", normalized=True, metric="euclidean", default_miner="none",
        reference="Wang et al. 2017",
        build=lambda p, d, c: losses.AngularLoss(p["alpha"], distance=_unit_euclidean()),
    ),
    _spec(
        name="margin", title="Margin (distance-weighted sampling)",
        description="Positives within beta - margin, negatives beyond beta + margin; fed by distance-weighted sampling.",
        params=(
            P("margin", 0.2, "half-width alpha of the band around the boundary beta", minimum=0),
            P("beta", 1.2, "distance boundary between positives and negatives (initial value if learned)", minimum=0),
            P("nu", 0.0, "regularisation weight of a learned beta", minimum=0),
            P("learn_beta", False, "learn one boundary beta per class"),
        ),
        family="pair", normalized=True, metric="euclidean", default_miner="distance_weighted",
        reference="Wu et al. 2017",
        build=lambda p, d, c: losses.MarginLoss(
            margin=p["margin"], nu=p["nu"], beta=p["beta"], learn_beta=p["learn_beta"],
            num_classes=c if p["learn_beta"] else None, distance=_unit_euclidean(),
        ),
    ),
    _spec(
        name="proxy_nca", title="Proxy-NCA",
        description="One learned proxy per class; each embedding should be nearest its own class proxy.",
        params=(P("softmax_scale", 9.0, "inverse temperature on squared distances (ProxyNCA++: 9)", minimum=0),),
        family="proxy", normalized=True, metric="euclidean", accepts_miner=False,
        reference="Movshovitz-Attias et al. 2017; Teh et al. 2020",
        build=lambda p, d, c: losses.ProxyNCALoss(c, d, softmax_scale=p["softmax_scale"]),
    ),
    _spec(
        name="proxy_anchor", title="Proxy-anchor",
        description="Each class proxy is an anchor pulling its batch samples in and pushing others away.",
        params=(
            P("margin", 0.1, "cosine margin delta", minimum=0),
            P("alpha", 32.0, "scaling factor of the soft max", minimum=0),
        ),
        family="proxy", normalized=True, metric="cosine", accepts_miner=False,
        reference="Kim et al. 2020",
        build=lambda p, d, c: losses.ProxyAnchorLoss(c, d, margin=p["margin"], alpha=p["alpha"]),
    ),
    _spec(
        name="softmax", title="Softmax (classifier baseline)",
        description="Plain cross-entropy of a linear classifier on the embedding; the baseline to beat.",
        params=(P("label_smoothing", 0.0, "share of the target mass spread over the other classes", minimum=0, maximum=1),),
        family="classifier", normalized=False, metric="cosine", accepts_miner=False,
        build=lambda p, d, c: SoftmaxLoss(d, c, label_smoothing=p["label_smoothing"]),
    ),
    _spec(
        name="center_softmax", title="Center loss + softmax",
        description="Softmax cross-entropy plus a pull of each embedding towards its learned class center.",
        params=(
            P("center_weight", 0.003, "weight lambda of the center loss (0.001-0.01 in the paper)", minimum=0),
            P("label_smoothing", 0.0, "share of the target mass spread over the other classes", minimum=0, maximum=1),
        ),
        family="classifier", normalized=False, metric="euclidean", accepts_miner=False,
        reference="Wen et al. 2016",
        build=lambda p, d, c: CenterSoftmaxLoss(d, c, p["center_weight"], p["label_smoothing"]),
    ),
    _spec(
        name="normalized_softmax", title="Normalized softmax",
        description="Softmax over cosines to normalised class weights, divided by a temperature.",
        params=(P("temperature", 0.05, "softmax temperature: small values sharpen", minimum=1e-6),),
        family="classifier", normalized=True, metric="cosine", accepts_miner=False,
        reference="Zhai & Wu 2018",
        build=lambda p, d, c: losses.NormalizedSoftmaxLoss(c, d, temperature=p["temperature"]),
    ),
    _spec(
        name="large_margin_softmax", title="Large-margin softmax (L-Softmax)",
        description="Softmax whose target-class angle is multiplied by m, demanding a larger angular gap.",
        params=(
            P("margin", 4, "integer angle multiplier m (1 = plain softmax)", minimum=1),
            P("scale", 1.0, "logit scale", minimum=0),
            _LAMBDA_MIN,
        ),
        family="classifier", normalized=False, metric="cosine", accepts_miner=False,
        reference="Liu et al. 2016",
        build=lambda p, d, c: LargeMarginSoftmaxLoss(c, d, margin=p["margin"], scale=p["scale"],
                                                     lambda_min=p["lambda_min"]),
    ),
    _spec(
        name="sphereface", title="SphereFace (A-Softmax)",
        description="L-Softmax with normalised class weights: a multiplicative angular margin.",
        params=(
            P("margin", 4, "integer angle multiplier m", minimum=1),
            P("scale", 1.0, "logit scale", minimum=0),
            _LAMBDA_MIN,
        ),
        family="classifier", normalized=False, metric="cosine", accepts_miner=False,
        reference="Liu et al. 2017",
        build=lambda p, d, c: SphereFaceLoss(c, d, margin=p["margin"], scale=p["scale"], lambda_min=p["lambda_min"]),
    ),
    _spec(
        name="cosface", title="CosFace",
        description="Softmax over scaled cosines with an additive cosine margin on the target class.",
        params=(P("margin", 0.35, "additive cosine margin m", minimum=0), _SCALE),
        family="classifier", normalized=True, metric="cosine", accepts_miner=False,
        reference="Wang et al. 2018",
        build=lambda p, d, c: losses.CosFaceLoss(c, d, margin=p["margin"], scale=p["scale"]),
    ),
    _spec(
        name="arcface", title="ArcFace",
        description="Softmax over scaled cosines with an additive angular margin on the target class.",
        params=(_MARGIN_DEG, _SCALE),
        family="classifier", normalized=True, metric="cosine", accepts_miner=False,
        reference="Deng et al. 2019",
        build=lambda p, d, c: losses.ArcFaceLoss(c, d, margin=p["margin"], scale=p["scale"]),
    ),
    _spec(
        name="subcenter_arcface", title="Sub-center ArcFace",
        description="ArcFace with several centers per class, so noisy or multi-modal classes fit better.",
        params=(_MARGIN_DEG, _SCALE, P("sub_centers", 3, "centers per class (K)", minimum=1)),
        family="classifier", normalized=True, metric="cosine", accepts_miner=False,
        reference="Deng et al. 2020",
        build=lambda p, d, c: losses.SubCenterArcFaceLoss(
            num_classes=c, embedding_size=d, margin=p["margin"], scale=p["scale"], sub_centers=p["sub_centers"]
        ),
    ),
    _spec(
        name="circle", title="Circle",
        description="Pair similarities re-weighted by how far each is from its optimum; a circular decision boundary.",
        params=(
            P("m", 0.4, "relaxation margin", minimum=0),
            P("gamma", 80.0, "scale factor", minimum=0),
        ),
        family="pair", normalized=True, metric="cosine", default_miner="none",
        reference="Sun et al. 2020",
        build=lambda p, d, c: losses.CircleLoss(m=p["m"], gamma=p["gamma"], distance=_cosine()),
    ),
    _spec(
        name="soft_triple", title="SoftTriple",
        description="Several learned centers per class; a smoothed triplet loss against them, no sampling needed.",
        params=(
            P("centers_per_class", 10, "learned centers per class (K)", minimum=1),
            P("la", 20.0, "scale lambda of the softmax", minimum=0),
            P("gamma", 0.1, "temperature of the soft assignment to a class's centers", minimum=1e-6),
            P("margin", 0.01, "margin delta on the target class similarity", minimum=0),
            P("center_reg_weight", 0.2, "weight tau of the regulariser merging redundant centers", minimum=0),
        ),
        family="proxy", normalized=True, metric="cosine", accepts_miner=False,
        reference="Qian et al. 2019",
        build=lambda p, d, c: losses.SoftTripleLoss(
            c, d, centers_per_class=p["centers_per_class"], la=p["la"], gamma=p["gamma"], margin=p["margin"],
            weight_regularizer=regularizers.SparseCentersRegularizer(c, p["centers_per_class"]),
            weight_reg_weight=p["center_reg_weight"],
        ),
    ),
    _spec(
        name="ranked_list", title="Ranked list",
        description="Positives inside a boundary, negatives outside it by a margin, for every sample of the batch.",
        params=(
            P("margin", 0.4, "gap m between the positive and the negative boundary", minimum=0),
            P("alpha", 1.2, "negative boundary: negatives must be farther than this", minimum=0),
            P("imbalance", 0.5, "balance lambda between the positive and the negative part", minimum=0, maximum=1),
            P("Tn", 1.0, "temperature weighting the hard negatives (0 = all equal; above 5 may overflow)",
              minimum=0, maximum=5),
            P("Tp", 0.0, "temperature weighting the hard positives", minimum=0, maximum=5),
        ),
        family="pair", normalized=True, metric="euclidean", accepts_miner=False,
        reference="Wang et al. 2019",
        build=lambda p, d, c: losses.RankedListLoss(
            margin=p["margin"], Tn=p["Tn"], imbalance=p["imbalance"], alpha=p["alpha"], Tp=p["Tp"],
            distance=_unit_euclidean(),
        ),
    ),
    _spec(
        name="histogram", title="Histogram",
        description="Minimises the overlap of the positive and negative similarity histograms of the batch.",
        params=(P("n_bins", 100, "histogram bins over cosine similarity [-1, 1]", minimum=2),),
        family="pair", normalized=True, metric="cosine", default_miner="none",
        reference="Ustinova & Lempitsky 2016",
        build=lambda p, d, c: losses.HistogramLoss(n_bins=p["n_bins"], distance=_BinnableCosine()),
    ),
    _spec(
        name="supcon", title="Supervised contrastive",
        description="For each sample, a softmax over the batch that should favour all of its same-class samples.",
        params=(P("temperature", 0.1, "softmax temperature", minimum=1e-6),),
        family="pair", normalized=True, metric="cosine", default_miner="none",
        reference="Khosla et al. 2020",
        build=lambda p, d, c: losses.SupConLoss(temperature=p["temperature"], distance=_cosine()),
    ),
]

LOSSES: dict[str, LossSpec] = {s.name: s for s in _LOSS_LIST}


# ----------------------------------------------------------------------------------------------------------
# The miner registry

_TRIPLET_MARGIN = P("margin", 0.1, "margin m in the loss's distance units (PML TripletMarginMiner rules)", minimum=0)
_STRATEGIES = ("easy", "semihard", "hard", "all")


def _triplet_miner(kind: str) -> Callable[[dict[str, Any], Metric], Any]:
    return lambda p, metric: miners.TripletMarginMiner(
        margin=p["margin"], type_of_triplets=kind, distance=metric_distance(metric)
    )


_MINER_LIST: list[MinerSpec] = [
    MinerSpec("none", "None (whole batch)", "The loss sees every pair / triplet of the batch.", (), "none",
              lambda p, metric: None),
    MinerSpec("all_triplets", "Margin-violating triplets",
              "Every triplet with d(a,n) <= d(a,p) + margin: the semi-hard and hard ones.",
              (_TRIPLET_MARGIN,), "triplets", _triplet_miner("all")),
    MinerSpec("easy_triplets", "Easy triplets", "Triplets already satisfied: d(a,n) > d(a,p) + margin.",
              (_TRIPLET_MARGIN,), "triplets", _triplet_miner("easy")),
    MinerSpec("semihard_triplets", "Semi-hard triplets",
              "Negatives farther than the positive but inside the margin: d(a,p) < d(a,n) <= d(a,p) + margin.",
              (_TRIPLET_MARGIN,), "triplets", _triplet_miner("semihard")),
    MinerSpec("hard_triplets", "Hard triplets", "Negatives at least as close as the positive: d(a,n) <= d(a,p).",
              (_TRIPLET_MARGIN,), "triplets", _triplet_miner("hard")),
    MinerSpec("batch_hard", "Batch hard", "Per anchor, its farthest positive and its nearest negative.",
              (), "triplets", lambda p, metric: miners.BatchHardMiner(distance=metric_distance(metric))),
    MinerSpec("batch_easy_hard", "Batch easy-hard",
              "Per anchor, one positive and one negative chosen by the two strategies (default: easiest positive, "
              "semi-hard negative).",
              (P("pos_strategy", "easy", "which positive per anchor", choices=_STRATEGIES),
               P("neg_strategy", "semihard", "which negative per anchor", choices=_STRATEGIES)),
              "pairs",
              lambda p, metric: miners.BatchEasyHardMiner(
                  pos_strategy=p["pos_strategy"], neg_strategy=p["neg_strategy"], distance=metric_distance(metric))),
    MinerSpec("distance_weighted", "Distance-weighted",
              "Negatives sampled with weight inverse to the density of distances on the sphere: spread over all "
              "difficulties (Euclidean on the unit sphere).",
              (P("cutoff", 0.5, "distances below this are treated as this (avoids huge weights)", minimum=0),
               P("nonzero_loss_cutoff", 1.4, "negatives farther than this are never sampled", minimum=0)),
              "triplets",
              lambda p, metric: miners.DistanceWeightedMiner(p["cutoff"], p["nonzero_loss_cutoff"])),
    MinerSpec("multi_similarity", "Multi-similarity",
              "Positives less similar than the hardest negative + epsilon, negatives more similar than the hardest "
              "positive - epsilon (cosine).",
              (P("epsilon", 0.1, "cosine slack epsilon", minimum=0),), "pairs",
              lambda p, metric: miners.MultiSimilarityMiner(p["epsilon"], distance=_cosine())),
    MinerSpec("pair_margin", "Pair margin",
              "Positive pairs farther than pos_margin, negative pairs closer than neg_margin (Euclidean on the unit "
              "sphere).",
              (P("pos_margin", 0.2, "positive pairs farther apart than this are kept", minimum=0),
               P("neg_margin", 0.8, "negative pairs closer than this are kept", minimum=0)),
              "pairs",
              lambda p, metric: miners.PairMarginMiner(p["pos_margin"], p["neg_margin"], distance=_unit_euclidean())),
]

MINERS: dict[str, MinerSpec] = {s.name: s for s in _MINER_LIST}


# ----------------------------------------------------------------------------------------------------------
# Building


def _loss_spec(name: str) -> LossSpec:
    try:
        return LOSSES[name]
    except KeyError:
        raise ValueError(f"unknown loss {name!r}; known losses: {', '.join(LOSSES)}") from None


def _miner_spec(name: str) -> MinerSpec:
    try:
        return MINERS[name]
    except KeyError:
        raise ValueError(f"unknown miner {name!r}; known miners: {', '.join(MINERS)}") from None


def _coerce(what: str, p: Param, value: Any) -> ParamValue:
    default = p.default
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = (isinstance(value, int) and not isinstance(value, bool)) or (
            isinstance(value, float) and value.is_integer()
        )
        value = int(value) if ok else value
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        value = float(value) if ok else value
    else:
        ok = isinstance(value, str) and (not p.choices or value in p.choices)
    if not ok:
        expected = f"one of {list(p.choices)}" if p.choices else f"a {type(default).__name__}"
        raise ValueError(f"{what}: parameter {p.name!r} must be {expected}, got {value!r}")
    if not isinstance(value, (bool, str)):
        if p.minimum is not None and value < p.minimum:
            raise ValueError(f"{what}: parameter {p.name!r} must be >= {p.minimum}, got {value!r}")
        if p.maximum is not None and value > p.maximum:
            raise ValueError(f"{what}: parameter {p.name!r} must be <= {p.maximum}, got {value!r}")
    return value


def resolve_params(what: str, spec_params: tuple[Param, ...], params: Mapping[str, Any] | None) -> dict[str, Any]:
    """Defaults overlaid with `params`, type-checked; unknown names refused with the list of known ones."""
    params = dict(params or {})
    known = {p.name: p for p in spec_params}
    unknown = sorted(set(params) - set(known))
    if unknown:
        listing = ", ".join(known) if known else "none"
        raise ValueError(f"{what}: unknown parameter(s) {unknown}; its parameters are: {listing}")
    return {name: _coerce(what, p, params.get(name, p.default)) for name, p in known.items()}


def build_loss(name: str, params: Mapping[str, Any] | None, *, embedding_dim: int, num_classes: int) -> MetricLoss:
    """The loss module, callable as ``loss(emb, labels, indices_tuple=None)`` and returning a scalar."""
    spec = _loss_spec(name)
    resolved = resolve_params(f"loss {name!r}", spec.params, params)
    if embedding_dim < 1 or num_classes < 1:
        raise ValueError(f"loss {name!r}: embedding_dim and num_classes must be >= 1, got {embedding_dim}, {num_classes}")
    assert spec.build is not None
    try:
        inner = spec.build(resolved, embedding_dim, num_classes)
    except (AssertionError, TypeError) as e:  # PML validates with asserts
        raise ValueError(f"loss {name!r}: invalid parameters {resolved}: {e}") from e
    return MetricLoss(spec, resolved, inner)


def loss_parameters(loss: nn.Module) -> list[nn.Parameter]:
    """Learned parameters of the loss itself (proxies, class weights, centers, learned beta)."""
    return [p for p in loss.parameters() if p.requires_grad]


def build_miner(name: str, params: Mapping[str, Any] | None = None, *, metric: Metric = "cosine") -> Any | None:
    """The PML miner (None for "none"); triplet-margin and batch miners measure with the loss's `metric`."""
    spec = _miner_spec(name)
    resolved = resolve_params(f"miner {name!r}", spec.params, params)
    metric_distance(metric)  # validates the name
    assert spec.build is not None
    try:
        return spec.build(resolved, metric)
    except (AssertionError, ValueError, TypeError) as e:
        raise ValueError(f"miner {name!r}: invalid parameters {resolved}: {' '.join(str(e).split())}") from e


def loss_metric(name: str) -> Metric:
    """The distance the loss works with: "cosine" or "euclidean"."""
    return _loss_spec(name).metric


def loss_margin(name: str, params: Mapping[str, Any] | None = None) -> float:
    """The margin the triplet census uses for this loss: the gap d(a,n) - d(a,p) the loss asks for.

    Triplet: its margin; margin loss: 2 * margin (beta - margin vs beta + margin); contrastive / lifted:
    (neg_margin - pos_margin) / distance_scale; ranked list: its margin; every other loss: DEFAULT_CENSUS_MARGIN (0.1).
    """
    spec = _loss_spec(name)
    p = resolve_params(f"loss {name!r}", spec.params, params)
    if name == "triplet" or name == "ranked_list":
        return float(p["margin"])
    if name == "margin":
        return 2.0 * float(p["margin"])
    if name in ("contrastive", "lifted_structure", "generalized_lifted_structure"):
        # margins in the loss's own units: distance_scale times the unit sphere's
        return max(0.0, float(p["neg_margin"]) - float(p["pos_margin"])) / float(p.get("distance_scale", 1.0))
    return DEFAULT_CENSUS_MARGIN


def compatible(
    loss: str,
    miner: str,
    loss_params: Mapping[str, Any] | None = None,
    miner_params: Mapping[str, Any] | None = None,
) -> str | None:
    """None when the miner can feed the loss; otherwise a sentence for the GUI saying why not."""
    ls, ms = _loss_spec(loss), _miner_spec(miner)
    if ms.output == "none":
        return None
    if not ls.accepts_miner:
        if ls.family == "proxy":
            why = "compares each embedding with learned class proxies, not with other embeddings of the batch"
        elif ls.family == "classifier":
            why = "classifies each embedding on its own against learned class weights"
        else:
            why = "weights every pair of the batch itself and takes no mined tuples"
        return f"{ls.title} {why}, so the {ms.title} miner's choice would be ignored; choose miner 'none'."
    if loss == "triplet" and miner == "easy_triplets":
        lm = resolve_params(f"loss {loss!r}", ls.params, loss_params)["margin"]
        mm = resolve_params(f"miner {miner!r}", ms.params, miner_params)["margin"]
        if mm >= lm:
            return (f"Easy triplets (d(a,n) > d(a,p) + {mm:g}) already satisfy the triplet margin {lm:g}: "
                    "the loss is zero on every one of them and nothing would be learned.")
    return None


def _format_value(v: ParamValue) -> str:
    return repr(v) if isinstance(v, str) else f"{v}"


def describe_all() -> str:
    """A plain-text table of every loss and miner with parameters and defaults (for ``main.py losses``)."""
    lines = ["LOSSES", "", f"{'name':30} {'family':10} {'metric':9} {'norm':5} {'default miner':18} description"]
    for s in LOSSES.values():
        miner = s.default_miner if s.accepts_miner else "(ignores miners)"
        lines.append(f"{s.name:30} {s.family:10} {s.metric:9} {'yes' if s.normalized else 'no':5} {miner:18} "
                     f"{s.title}: {s.description}")
        for p in s.params:
            lines.append(f"{'':34}{p.name} = {_format_value(p.default)}  -- {p.help}")
        if s.reference:
            lines.append(f"{'':34}[{s.reference}]")
    lines += ["", "MINERS", "", f"{'name':30} {'output':10} description"]
    for m in MINERS.values():
        lines.append(f"{m.name:30} {m.output:10} {m.title}: {m.description}")
        for p in m.params:
            choices = f" (one of {', '.join(p.choices)})" if p.choices else ""
            lines.append(f"{'':34}{p.name} = {_format_value(p.default)}{choices}  -- {p.help}")
    return "\n".join(lines)
