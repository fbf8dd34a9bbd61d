"""``probe-heads``: ITI's localisation. One logistic probe per attention head predicts whether a (question,
answer) text is truthful from the head's output at the last token; the heads whose probes do best on held-out
questions are the located heads.

All probes are fit at once: the L2-penalised logistic regression of every head is solved by batched Newton
steps on a [heads, d_head + 1] parameter tensor, to the same optimum as scikit-learn's per-head
``LogisticRegression(C=...)`` (the penalty spares the intercept, as there).
"""
from __future__ import annotations

import json

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator

from loctest import Component, ComponentSet, Locator, PluginConfig
from loctest.errors import UserError

from ..iti_common import PROMPT_HELP, QA_PROMPT, check_prompt, head_activations


class ProbeHeadsConfig(PluginConfig):
    dataset: str = Field(..., description="Dataset (in [datasets]) whose correct and incorrect answers train the probes: use a training split.")
    top_k: int = Field(16, ge=1, description="How many heads to keep (ITI and Wang & Veitch: 16).")
    val_fraction: float = Field(0.2, gt=0, lt=1, description="Share of the dataset's questions held out to rank the probes (ITI: 0.2).")
    c: float = Field(1.0, gt=0, description="Inverse L2 strength, as scikit-learn's C (ITI uses the default 1.0).")
    prompt: str = Field(QA_PROMPT, description=PROMPT_HELP)

    _prompt = field_validator("prompt")(check_prompt)


def _logistic_loss(x: torch.Tensor, y: torch.Tensor, theta: torch.Tensor, ridge: torch.Tensor) -> torch.Tensor:
    """[G] summed log-loss plus 0.5 * ridge * theta^2 of each probe; x [G, N, D+1], theta [G, D+1]."""
    z = torch.bmm(x, theta.unsqueeze(-1)).squeeze(-1)
    return (F.softplus(z) - y * z).sum(-1) + 0.5 * (ridge * theta.square()).sum(-1)


def fit_logistic_probes(x: torch.Tensor, y: torch.Tensor, c: float = 1.0, max_steps: int = 100,
                        tol: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """Fit G independent L2-penalised logistic regressions at once.

    ``x`` [G, N, D] features (one matrix per probe), ``y`` [N] labels in {0, 1}. Minimises, per probe,
    sum_n logloss(w.x_n + b, y_n) + ||w||^2 / (2c) (scikit-learn's objective) by Newton steps with
    backtracking, until every probe's largest gradient entry is below ``tol`` * N. Returns weights [G, D]
    and intercepts [G].
    """
    g, n, d = x.shape
    x = torch.cat([x, x.new_ones(g, n, 1)], dim=-1)
    y = y.to(x.dtype)
    ridge = x.new_full((d + 1,), 1.0 / c)
    ridge[-1] = 0.0  # no penalty on the intercept
    theta = x.new_zeros(g, d + 1)
    loss = _logistic_loss(x, y, theta, ridge)
    eye = torch.eye(d + 1, dtype=x.dtype, device=x.device)
    for _ in range(max_steps):
        p = torch.sigmoid(torch.bmm(x, theta.unsqueeze(-1)).squeeze(-1))
        grad = torch.bmm(x.transpose(1, 2), (p - y).unsqueeze(-1)).squeeze(-1) + ridge * theta
        if grad.abs().amax() < tol * n:
            break
        weight = (p * (1 - p)).unsqueeze(-1)
        hessian = torch.bmm(x.transpose(1, 2), x * weight) + torch.diag(ridge) + 1e-6 * eye
        step = torch.linalg.solve(hessian, grad)
        # per-probe backtracking: halve the step of probes whose loss did not decrease enough
        scale = x.new_ones(g)
        decrease = (grad * step).sum(-1)
        for _ in range(30):
            candidate = theta - scale.unsqueeze(-1) * step
            new_loss = _logistic_loss(x, y, candidate, ridge)
            worse = new_loss > loss - 1e-4 * scale * decrease + 1e-6 * loss.abs()
            if not worse.any():
                break
            scale = torch.where(worse, scale / 2, scale)
        theta, loss = candidate, new_loss
    return theta[:, :d], theta[:, d]


def question_split(n_questions: int, val_fraction: float, rng) -> torch.Tensor:
    """[n_questions] bool: True for the questions held out for validation (at least one, never all)."""
    n_val = min(n_questions - 1, max(1, round(n_questions * val_fraction)))
    held_out = torch.zeros(n_questions, dtype=torch.bool)
    held_out[torch.as_tensor(rng.permutation(n_questions)[:n_val])] = True
    return held_out


class ProbeHeads(Locator):
    name = "probe-heads"
    description = "Attention heads whose logistic truthfulness probes score best on held-out questions (ITI)."
    Config = ProbeHeadsConfig

    def locate(self, context) -> ComponentSet:
        shape = context.shape
        if self.config.top_k > shape.n_layers * shape.n_heads:
            raise UserError(f"probe-heads: top_k {self.config.top_k} exceeds the model's {shape.n_layers * shape.n_heads} heads")
        acts = head_activations(context, self.config.dataset, self.config.prompt, self.name)
        n_questions = int(acts.question.max()) + 1
        if n_questions < 2:
            raise UserError(f"probe-heads: dataset {self.config.dataset!r} needs at least 2 questions (train and validation)")
        held_out = question_split(n_questions, self.config.val_fraction, context.rng("probe-heads", self.config.dataset))
        val = held_out[acts.question]
        per_head = acts.values.flatten(1, 2).transpose(0, 1)  # [heads, N, d_head]
        with context.progress.task(f"{context.arm}: fit {per_head.shape[0]} probes", total=1) as advance:
            weights, bias = fit_logistic_probes(per_head[:, ~val], acts.truthful[~val], self.config.c)
            advance(1)
        logits = torch.bmm(per_head[:, val], weights.unsqueeze(-1)).squeeze(-1) + bias.unsqueeze(-1)
        accuracy = ((logits > 0) == acts.truthful[val]).float().mean(-1)
        order = torch.argsort(accuracy, descending=True, stable=True)[: self.config.top_k]
        heads = [Component("head", int(i) // shape.n_heads, int(i) % shape.n_heads) for i in order]
        self._write_accuracies(context, accuracy.view(shape.n_layers, shape.n_heads), int((~val).sum()), int(val.sum()))
        return ComponentSet(heads)

    def _write_accuracies(self, context, accuracy: torch.Tensor, n_train: int, n_val: int) -> None:
        """``probe_heads/ARM.json`` in the run directory: every head's validation accuracy."""
        folder = context.run_dir / "probe_heads"
        folder.mkdir(parents=True, exist_ok=True)
        data = {"dataset": self.config.dataset, "train_texts": n_train, "validation_texts": n_val,
                "validation_accuracy": {f"head:{l}:{h}": round(float(accuracy[l, h]), 6)
                                        for l in range(accuracy.shape[0]) for h in range(accuracy.shape[1])}}
        (folder / f"{context.arm or 'probe-heads'}.json").write_text(json.dumps(data, indent=1))
