"""``offline``: a small truth/info judge trained on TruthfulQA's human labels; CPU only, no network.

A wide-and-deep classifier with two outputs (truthful, informative): a linear model over hashed n-grams of the
answer and of its role template, plus a one-hidden-layer MLP over similarity features of the answer to the
question's reference answers (see ``reference_features``). Weights ship in
``data/truthfulqa_judge/offline_judge.safetensors``, produced by ``python -m loctest_plugins.judges.train_offline``;
the file's metadata records the training settings and the held-out agreement with human labels.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import scipy.sparse
import torch
from pydantic import Field
from safetensors.torch import load_file, safe_open, save

from loctest import PluginConfig
from loctest.cache import source_fingerprint
from loctest.base import Example, Judge, Verdict
from loctest.errors import UserError
from loctest.files import atomic_write

from .judge_data import DATA, references
from .reference_features import HASH_BITS, ReferenceSet

WEIGHTS = DATA / "offline_judge.safetensors"


class SparseMatmul(torch.autograd.Function):
    """``X @ weight`` for a SciPy CSR matrix ``X`` (much faster than torch.sparse on CPU); grads for ``weight``."""

    @staticmethod
    def forward(ctx, weight: torch.Tensor, matrix: scipy.sparse.csr_matrix) -> torch.Tensor:
        ctx.matrix = matrix
        return torch.from_numpy(np.asarray(matrix @ weight.detach().numpy(), dtype=np.float32))

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return torch.from_numpy(np.asarray(ctx.matrix.T @ grad.numpy(), dtype=np.float32)), None


class JudgeNet(torch.nn.Module):
    """Two logits (truthful, informative) = linear(hashed n-grams) + MLP(standardised dense features)."""

    def __init__(self, n_dense: int, hidden: int):
        super().__init__()
        self.wide = torch.nn.Parameter(torch.zeros(1 << HASH_BITS, 2))
        self.deep = torch.nn.Sequential(torch.nn.Linear(n_dense, hidden), torch.nn.GELU(), torch.nn.Linear(hidden, 2))
        self.register_buffer("mean", torch.zeros(n_dense))
        self.register_buffer("std", torch.ones(n_dense))

    def forward(self, features: Features) -> torch.Tensor:
        return self.deep((features.dense - self.mean) / self.std) + SparseMatmul.apply(self.wide, features.sparse)


@dataclass
class Features:
    dense: torch.Tensor  # [N, n_dense]
    sparse: scipy.sparse.csr_matrix  # [N, 2**HASH_BITS], each row's buckets weighted 1/sqrt(count)


def featurize(refsets: Sequence[ReferenceSet], answers: Sequence[str]) -> Features:
    """Features of each answer against its question's references."""
    rows = [r.sparse(a) for r, a in zip(refsets, answers)]
    lengths = np.array([len(b) for b in rows])
    values = np.repeat(1 / np.sqrt(np.maximum(lengths, 1)), lengths).astype(np.float32)
    indices = np.fromiter((i for b in rows for i in b), dtype=np.int64, count=int(lengths.sum()))
    sparse = scipy.sparse.csr_matrix((values, indices, np.concatenate([[0], np.cumsum(lengths)])),
                                     shape=(len(rows), 1 << HASH_BITS))
    dense = torch.tensor([r.dense(a) for r, a in zip(refsets, answers)], dtype=torch.float32)
    return Features(dense, sparse)


def save_weights(net: JudgeNet, idf: np.ndarray, metadata: dict, path: Path) -> None:
    """The linear weights and IDF table as float16 (the file stays small), the MLP as float32."""
    tensors = {k: v.detach().clone().contiguous() for k, v in net.state_dict().items()}
    tensors["wide"] = tensors["wide"].half()
    tensors["idf"] = torch.from_numpy(idf).half()
    atomic_write(path, save(tensors, metadata={"loctest": json.dumps(metadata, sort_keys=True)}))


def read_metadata(path: Path) -> dict:
    with safe_open(str(path), "pt") as f:
        return json.loads(f.metadata()["loctest"])


@lru_cache(maxsize=4)
def load_weights(path: str) -> tuple[JudgeNet, np.ndarray]:
    tensors = load_file(path)
    idf = tensors.pop("idf").double().numpy()
    tensors["wide"] = tensors["wide"].float()
    net = JudgeNet(tensors["mean"].shape[0], tensors["deep.0.weight"].shape[0])
    net.load_state_dict(tensors)
    return net.eval(), idf


@lru_cache(maxsize=1)
def known_references() -> dict[str, tuple[tuple[str, ...], tuple[str, ...]]]:
    """Reference answers of every TruthfulQA question loctest ships (v1 judge release, then the 2025 edition)."""
    from ..datasets.truthfulqa import TruthfulQABinary

    found = {ex.question: (ex.correct, ex.incorrect) for ex in TruthfulQABinary().load()}
    found.update({q: (tuple(c), tuple(i)) for q, (c, i) in references().items()})
    return found


class OfflineJudgeConfig(PluginConfig):
    weights: str | None = Field(None, description="A weights file written by loctest_plugins.judges.train_offline "
                                                  "(default: the one shipped with loctest).")


def weights_path(config: OfflineJudgeConfig) -> Path:
    return Path(config.weights).expanduser() if config.weights else WEIGHTS


class OfflineJudge(Judge):
    name = "offline"
    description = ("Small CPU judge trained on TruthfulQA's human truth/info labels; compares each answer with "
                   "its question's reference answers.")
    Config = OfflineJudgeConfig

    @classmethod
    def fingerprint(cls, config, plugins) -> list:
        """Verdicts depend on the weights file and on the feature code."""
        path = weights_path(config)
        return [hashlib.sha256(path.read_bytes()).hexdigest()[:16] if path.exists() else None,
                source_fingerprint(ReferenceSet)]

    def judge(self, questions: list[str], answers: list[str], references: list[Example] | None = None) -> list[Verdict]:
        if not answers:
            return []
        path = weights_path(self.config)
        if not path.exists():
            raise UserError(f"offline judge: weights: file not found: {path}")
        net, idf = load_weights(str(path))
        pairs = [(tuple(ex.correct), tuple(ex.incorrect)) for ex in references] if references is not None else \
            [self._lookup(q) for q in questions]
        refsets: dict[tuple, ReferenceSet] = {}
        for q, (correct, incorrect) in zip(questions, pairs):
            if (q, correct, incorrect) not in refsets:
                refsets[q, correct, incorrect] = ReferenceSet(q, correct, incorrect, idf)
        features = featurize([refsets[q, c, i] for q, (c, i) in zip(questions, pairs)], answers)
        with torch.no_grad():
            probs = torch.sigmoid(net(features)).tolist()
        return [Verdict(truthful=t, informative=i) for t, i in probs]

    @staticmethod
    def _lookup(question: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
        found = known_references().get(question.strip())
        if found is None:
            raise UserError(f"offline judge: no reference answers for question {question.strip()!r}: it is not a "
                            "TruthfulQA question; pass references= (the info-truth scorer passes its dataset's)")
        return found
