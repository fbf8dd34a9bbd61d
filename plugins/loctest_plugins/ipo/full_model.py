"""The unrestricted baseline: peft's rank-1 LoRA on whole projections, and its conversion to an edit.

peft trains ``W <- W + s B A`` (``A`` [1, in], ``B`` [out, 1], scaling ``s`` = lora_alpha / r = 1) on the
projection fed by each site (the attention output projection for heads). The LoRA adds ``s (A o) B`` to the
projection's output; on its input that is the edit ``o <- o + <a, o> b`` with ``a = s A`` and ``b`` solving
``W b = B`` (least squares, ``b = pinv(W) B``). The conversion is exact when ``W`` has full row rank (square
and invertible in the paper's models and SmolLM2); otherwise the part of ``B`` outside ``W``'s column space is
lost, and :func:`to_edit` reports the relative residual ``|W b - B| / |B|``.
"""
from __future__ import annotations

import warnings

import torch

from loctest.interventions import Site

from .edit import RankOneEdit, SiteEdit


def lora_model(module: torch.nn.Module, targets: dict[Site, str], seed: int):
    """Wrap a model object of its own (never a backend's) with rank-1 LoRA on the ``targets`` module paths.
    Only the LoRA weights require grad; dropout is off; the initialisation (A Kaiming-uniform, B zero) is seeded."""
    from peft import LoraConfig, get_peft_model

    first = module.get_submodule(next(iter(targets.values())))
    config = LoraConfig(r=1, lora_alpha=1, lora_dropout=0.0, bias="none", target_modules=list(targets.values()),
                        fan_in_fan_out=type(first).__name__ == "Conv1D")  # GPT-2 stores weights as [in, out]
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # peft asks transformers a deprecated question
        torch.manual_seed(seed)
        model = get_peft_model(module, config)
    model.eval()
    return model


def lora_parameters(model) -> list[torch.nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def logits_of(model):
    """The ``LogitsOf`` of a plain Hugging Face (peft) model, with the batch's padding and positions."""
    return lambda batch: model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                               position_ids=batch.position_ids).logits


def to_edit(model, targets: dict[Site, str]) -> tuple[RankOneEdit, float]:
    """The trained LoRA as a :class:`RankOneEdit` on the projections' inputs (mask: every column), and the
    largest relative residual of the conversion over sites (0 up to rounding when exact)."""
    sites, worst = [], 0.0
    for site, path in targets.items():
        layer = model.base_model.model.get_submodule(path)
        weight = layer.get_base_layer().weight.detach().double()
        w = weight.T if layer.fan_in_fan_out else weight  # [out, in]
        a = layer.lora_A["default"].weight.detach().double()[0] * layer.scaling["default"]
        out_direction = layer.lora_B["default"].weight.detach().double()[:, 0]
        b = torch.linalg.pinv(w) @ out_direction
        if out_direction.norm() > 0:
            worst = max(worst, float((w @ b - out_direction).norm() / out_direction.norm()))
        sites.append(SiteEdit(site, torch.nn.Parameter(a.float()), torch.nn.Parameter(b.float()), torch.ones_like(a, dtype=torch.float32)))
    return RankOneEdit(sites), worst
