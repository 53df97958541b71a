"""`distill mutual`: deep mutual learning (Zhang et al., CVPR 2018); the run is `distill.training.mutual.run`.

    distill mutual mutual-mnist1d seeds=[0,1,2]
    distill mutual mutual-mnist1d mutual.peers=3
    distill mutual mutual-mnist1d "mutual.models=[{name: cnn1d, width: 32}, {name: mlp, width: 100, depth: 2}]"

K peers learn together from scratch, on the same batches, each from its own initialisation.
Peer k minimises

    CE(y, z_k) + alpha * T^2 * 1/(K-1) * sum_{l != k} KL(p_l^T || p_k^T)

with the other peers' predictions p_l detached, T = distill.temperature and alpha =
distill.alpha (with their schedules): the paper's loss is alpha = 1, T = 1, and alpha = 0 is
cross-entropy alone. The update is simultaneous: one forward pass of every peer, each peer's
loss reading the others' predictions of that pass, one optimizer step for all (the paper's
Algorithm 1 alternates instead: peer 2's loss reads peer 1's prediction after peer 1's step).

Rows: `peer` (member = the peer's index), `ensemble` (the peers' mean probabilities), and,
with `mutual.alone`, `alone`: each peer architecture trained from labels alone with the same
train section, seed, initialisation and batches as the first peer of that architecture (for
peer 0 exactly the same: only the KL term differs): the baseline, paired by seed on the page.
"""

from __future__ import annotations

from dataclasses import dataclass

from distill.errors import ConfigError
from distill.schema import Section, spec
from distill.kinds import Kind, TuneTarget, View, default_label


@dataclass
class MutualConfig(Section):
    """K peers, trained together (the `distill` section gives T and alpha of the peer term)."""

    peers: int = spec(2, "number of peers K trained together", ge=2)
    models: list[dict] = spec([], "peers' architectures as model-section mappings: one for all peers or one per "
                              "peer, e.g. [{name: cnn1d, width: 32}, {name: mlp}]; empty = the model section")
    alone: bool = spec(True, "also train each peer architecture alone from labels (cross-entropy, the same train "
                       "section, seed and initialisation as its first peer): the baseline, role alone")
    pack: bool = spec(True, "train same-architecture peers stacked with torch.func when the model allows "
                      "(replicas.can_stack; BatchNorm and dropout per peer); otherwise side by side, each as "
                      "itself, in the same steps")

    def __post_init__(self):
        from distill.config import ModelConfig  # noqa: the config module imports this one
        from distill.schema import from_dict

        if self.models and len(self.models) not in (1, self.peers):
            raise ConfigError(f"mutual.models: {len(self.models)} architectures for {self.peers} peers; give one "
                              f"for all peers or one per peer (and mutual.peers={len(self.models)})")
        for i, section in enumerate(self.models):
            from_dict(ModelConfig, section, prefix=f"mutual.models[{i}].")


def problem(cfg) -> str:
    """What keeps this config from being a mutual-learning run ('' when nothing does)."""
    if cfg.distill.method != "kd":
        return (f"distill.method: mutual learning's peer term is the KL of Hinton KD at distill.temperature, "
                f"weighted by distill.alpha; set distill.method=kd (got {cfg.distill.method})")
    if cfg.distill.teacher is not None or cfg.teacher.model is not None:
        return ("distill mutual trains its peers from scratch without a teacher; set distill.teacher=null and "
                "teacher.model=null")
    for key in ("teacher_same_seed", "teacher_other_split"):  # teacher keys nothing here reads
        if getattr(cfg.distill, key):
            return f"distill.{key}: distill mutual has no teacher, so nothing reads it; set distill.{key}=false"
    if cfg.distill.lm_chunk:  # the peer term is the whole KL (distill.training.mutual), never chunked
        return "distill.lm_chunk: distill mutual computes its peer term all at once, so nothing reads it; " \
               "set distill.lm_chunk=0"
    return ""


def check(cfg) -> None:
    """A sweep of mutual-learning trials is checked before Ray starts (a plain run checks in its preamble)."""
    if cfg.tune.kind == "mutual" and problem(cfg):
        raise ConfigError(problem(cfg))


def _whole(value):
    return int(value) if isinstance(value, float) and value.is_integer() else value  # a report's 1.0 -> 1


def label(row: dict) -> str:
    role = row.get("role")
    if role == "peer":
        return f"peer {_whole(row.get('member'))} {row.get('name')}"
    if role == "alone":
        return f"{row.get('name')} alone"
    if role == "ensemble":
        return f"ensemble of the {_whole(row.get('size'))} peers"
    return default_label(row)


def _ensemble(rows: list, metric: str, cfg):
    return next((r for r in rows if r.get("role") == "ensemble"), None)


def peer_zero(rows):
    """The index line's model: peer 0 over its seeds (the peers are not pooled)."""
    return rows[(rows["role"] == "peer") & (rows["member"] == 0)]


KIND = Kind(
    name="mutual",
    help="deep mutual learning: K peers trained together, each also matching the others' predictions",
    run="distill.training.mutual:run",
    preflight="distill.training.mutual:check",
    section=MutualConfig,
    check=check,
    targets=(
        TuneTarget("peer", "peer 0, each epoch", "peer 0", fields=lambda cfg: {"role": "peer", "member": 0}),
        TuneTarget("ensemble", "the peers' ensemble (mean probabilities), one report at the end", "ensemble of "
                   "the peers", live=False, choose=_ensemble),
    ),
    label=label,
    order=3,
    # the models page; its first role is the reference every other model is paired with by seed
    view=View("deep mutual learning", layout="models", roles=("alone", "peer", "ensemble"), headline=peer_zero),
)
