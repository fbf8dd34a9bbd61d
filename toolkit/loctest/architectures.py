"""Where each architecture keeps its layers and the two projections loctest's components feed.

Used only by backends (plugins never see module paths). ``layers`` is the path from the Hugging Face causal
LM to its list of blocks; ``mlp_out`` and ``attn_out`` are paths inside one block to the MLP down projection
and the attention output projection, whose *inputs* are the MLP-neuron and attention-head sites. The
residual-stream site is the *output* of the block itself.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .components import ModelShape
from .errors import UserError, did_you_mean


@dataclass(frozen=True)
class Architecture:
    layers: str
    mlp_out: str
    attn_out: str

    def layer_module_path(self, site: tuple[str, int]) -> str:
        """The module whose input (MLP and attention sites) or output (residual stream) is the site."""
        kind, layer = site
        inside = {"mlp": f".{self.mlp_out}", "attn": f".{self.attn_out}", "resid": ""}[kind]
        return f"{self.layers}.{layer}{inside}"


_LLAMA_LIKE = Architecture("model.layers", "mlp.down_proj", "self_attn.o_proj")
ARCHITECTURES: dict[str, Architecture] = {
    **{t: _LLAMA_LIKE for t in ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "olmo",
                                "olmo2", "phi3", "granite", "smollm3")},
    "gpt2": Architecture("transformer.h", "mlp.c_proj", "attn.c_proj"),
    "gpt_neox": Architecture("gpt_neox.layers", "mlp.dense_4h_to_h", "attention.dense"),
    "gptj": Architecture("transformer.h", "mlp.fc_out", "attn.out_proj"),
    "opt": Architecture("model.decoder.layers", "fc2", "self_attn.out_proj"),
    "phi": Architecture("model.layers", "mlp.fc2", "self_attn.dense"),
}


def architecture_of(model: torch.nn.Module) -> Architecture:
    model_type = getattr(model.config, "model_type", "")
    if model_type not in ARCHITECTURES:
        raise UserError(f"model type {model_type!r} is not supported yet: {did_you_mean(model_type, ARCHITECTURES)}")
    return ARCHITECTURES[model_type]


def _in_features(module: torch.nn.Module) -> int:
    if hasattr(module, "in_features"):
        return module.in_features
    return module.weight.shape[0]  # GPT-2's Conv1D stores weight as [in, out]


def shape_of(model: torch.nn.Module, arch: Architecture) -> ModelShape:
    layers = model.get_submodule(arch.layers)
    first = layers[0]
    cfg = model.config
    n_heads = getattr(cfg, "num_attention_heads", None) or getattr(cfg, "n_head")
    attn_width = _in_features(first.get_submodule(arch.attn_out))
    return ModelShape(n_layers=len(layers), n_heads=n_heads, d_head=attn_width // n_heads,
                      d_mlp=_in_features(first.get_submodule(arch.mlp_out)),
                      d_model=model.get_input_embeddings().embedding_dim)
