"""``probe-heads``: ITI's localisation. One logistic probe per attention head predicts whether a (question,
answer) text is truthful from the head's output at the last token; the heads whose probes do best on held-out
questions are the located heads, each scored by its probe's held-out accuracy.

All probes are fit at once: the L2-penalised logistic regression of every head is solved by batched Newton
steps on a [heads, d_head + 1] parameter tensor, to the same optimum as scikit-learn's per-head
``LogisticRegression(C=...)`` (the penalty spares the intercept, as there).
"""
from __future__ import annotations


import torch
import torch.nn.functional as F
from pydantic import Field, field_validator

from loctest import Component, ComponentSet, DatasetRef, Locator, PluginConfig
from loctest.errors import UserError

from ..common.head_activations import head_activations
from ..common.qa import PROMPT_HELP, QA_PROMPT, check_prompt


class ProbeHeadsConfig(PluginConfig):
    dataset: DatasetRef = Field(..., description="Dataset (in [datasets]) whose correct and incorrect answers train the probes: use a training split.")
    top_k: int = Field(16, ge=1, description="How many heads to keep (ITI and Wang & Veitch: 16); a sweep's sizes go up to it.")
    val_fraction: float = Field(0.2, gt=0, lt=1, description="Share of the dataset's questions held out to rank the probes (ITI: 0.2).")
    c: float = Field(1.0, gt=0, description="Inverse L2 strength, as scikit-learn's C (ITI uses the default 1.0).")
    prompt: str = Field(QA_PROMPT, description=PROMPT_HELP)

    _prompt = field_validator("prompt")(check_prompt)


CPU_CACHE_BYTES = 1 << 20  # on CPU, Hessians are built a few heads at a time, each weighted copy this small


def fit_logistic_probes(x: torch.Tensor, y: torch.Tensor, c: float = 1.0, tol: float = 1e-4,
                        max_steps: int = 50) -> tuple[torch.Tensor, torch.Tensor]:
    """Fit G independent L2-penalised logistic regressions at once.

    ``x`` [G, N, D] features (one matrix per probe), ``y`` [N] labels in {0, 1}. Minimises, per probe,
    sum_n logloss(w.x_n + b, y_n) + ||w||^2 / (2c) (scikit-learn's objective) by Newton steps with a per-probe
    backtracking line search, until every probe's largest gradient entry is below ``tol`` * N (scikit-learn's
    default stopping rule on its averaged loss). Returns weights [G, D] and intercepts [G].
    """
    g, n, d = x.shape
    x = x.contiguous()
    xt = x.transpose(1, 2).contiguous()  # both layouts: every product below is a row-times-matrix product
    y = y.to(x.dtype)
    w, b, z = x.new_zeros(g, d), x.new_zeros(g), x.new_zeros(g, n)  # z = x w + b, kept up to date

    def objective(z, w):
        return (F.softplus(z) - y * z).sum(-1) + 0.5 / c * w.square().sum(-1)

    loss = objective(z, w)
    hessian = x.new_empty(g, d + 1, d + 1)
    chunk = g if x.device.type != "cpu" else max(1, CPU_CACHE_BYTES // (n * d * x.element_size()))
    for _ in range(max_steps):
        p = torch.sigmoid(z)
        residual = p - y
        grad = torch.cat([torch.bmm(residual.unsqueeze(1), x).squeeze(1) + w / c, residual.sum(-1, keepdim=True)], -1)
        if grad.abs().amax() < tol * n:
            break
        s = p * (1 - p)
        for part in range(0, g, chunk):  # the weighted copy of x stays in cache
            heads = slice(part, part + chunk)
            hessian[heads, :d, :d] = torch.bmm(xt[heads] * s[heads].unsqueeze(1), x[heads])
        hessian[:, :d, d] = hessian[:, d, :d] = torch.bmm(s.unsqueeze(1), x).squeeze(1)
        hessian[:, d, d] = s.sum(-1)
        hessian.diagonal(dim1=1, dim2=2).add_(1e-6)
        hessian.diagonal(dim1=1, dim2=2)[:, :d].add_(1.0 / c)
        step = torch.linalg.solve(hessian, grad)
        z_step = torch.bmm(step[:, None, :d], xt).squeeze(1) + step[:, d:]
        # per-probe backtracking: halve the step of probes whose loss did not decrease enough (Armijo, with a
        # float32 rounding allowance)
        scale = x.new_ones(g)
        decrease = (grad * step).sum(-1)
        for _ in range(30):
            new_loss = objective(z - scale[:, None] * z_step, w - scale[:, None] * step[:, :d])
            worse = new_loss > loss - 1e-4 * scale * decrease + 1e-6 * loss.abs()
            if not worse.any():
                break
            scale = torch.where(worse, scale / 2, scale)
        z, w, b = z - scale[:, None] * z_step, w - scale[:, None] * step[:, :d], b - scale * step[:, d]
        loss = new_loss
    return w, b


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
    scored = True

    def locate(self, context) -> ComponentSet:
        shape = context.shape
        if self.config.top_k > shape.n_layers * shape.n_heads:
            raise UserError(f"probe-heads: top_k {self.config.top_k} exceeds the model's {shape.n_layers * shape.n_heads} heads")
        acts = head_activations(context, self.config.dataset, self.config.prompt, self.name)
        n_questions = int(acts.question.max()) + 1
        if n_questions < 2:
            raise UserError(f"probe-heads: dataset {self.config.dataset!r} needs at least 2 questions (train and validation)")
        held_out = question_split(n_questions, self.config.val_fraction, context.rng("probe-heads", self.config.dataset))
        device = context.model.device  # fit on the model's device (a GPU fits every probe in milliseconds)
        val = held_out[acts.question].to(device)
        truthful = acts.truthful.to(device)
        per_head = acts.values.to(device).flatten(1, 2).transpose(0, 1)  # [heads, N, d_head]
        with context.progress.task(f"{context.arm}: fit {per_head.shape[0]} probes", total=1) as advance:
            weights, bias = fit_logistic_probes(per_head[:, ~val], truthful[~val], self.config.c)
            advance(1)
        logits = torch.bmm(per_head[:, val], weights.unsqueeze(-1)).squeeze(-1) + bias.unsqueeze(-1)
        accuracy = ((logits > 0) == truthful[val]).float().mean(-1).cpu()
        order = torch.argsort(accuracy, descending=True, stable=True)[: self.config.top_k]
        heads = [Component("head", int(i) // shape.n_heads, int(i) % shape.n_heads) for i in order]
        self._write_accuracies(context, accuracy.view(shape.n_layers, shape.n_heads), int((~val).sum()), int(val.sum()))
        return ComponentSet(heads, {h.name: float(accuracy[i]) for h, i in zip(heads, order)})

    def _write_accuracies(self, context, accuracy: torch.Tensor, n_train: int, n_val: int) -> None:
        """``probe_heads/ARM.json`` in the run directory: every head's validation accuracy."""
        data = {"dataset": self.config.dataset, "train_texts": n_train, "validation_texts": n_val,
                "validation_accuracy": {f"head:{l}:{h}": round(float(accuracy[l, h]), 6)
                                        for l in range(accuracy.shape[0]) for h in range(accuracy.shape[1])}}
        context.write_output(f"probe_heads/{context.arm or 'probe-heads'}.json", data)
