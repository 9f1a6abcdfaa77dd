"""The structure of a Hugging Face causal LM, read off the model transformers builds.

:func:`skeleton` builds the ``*ForCausalLM`` of a config on the meta device (no
memory, no weights) and finds, without a table per family:

* the decoder layers: the one ``nn.ModuleList`` of ``num_hidden_layers`` modules;
* which other weighted modules run before them (token and position embeddings:
  the input stage) and after them (final norm, projections, the head: the
  output stage), by running the model's own forward once on the meta device
  with the layers stubbed out and recording the order of module calls;
* where each checkpoint tensor goes, by transformers' own renaming and
  conversion rules (``conversion_mapping``: e.g. Mixtral's per-expert
  checkpoint tensors are fused into one parameter on load).

Whatever cannot be placed on one side of a stage boundary is refused here with
the reason, before any weights are read.
"""

from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForMaskedLM, DynamicCache, PreTrainedModel
from transformers.cache_utils import LinearAttentionCacheLayerMixin
from transformers.conversion_mapping import get_model_conversion_mapping
from transformers.core_model_loading import WeightConverter, WeightRenaming, rename_source_key

from proto.errors import ModelError

logger = logging.getLogger(__name__)


class Passthrough(nn.Module):
    """Stands in for a decoder layer a stage does not run before its own: hands the hidden states on,
    alone or as a 1-tuple, as the family's layers return them."""

    def __init__(self, as_tuple: bool = False):
        super().__init__()
        self.as_tuple = as_tuple

    def forward(self, *args, **kwargs):
        h = args[0] if args else kwargs["hidden_states"]
        return (h,) if self.as_tuple else h


@dataclass(frozen=True)
class Skeleton:
    model: PreTrainedModel  # the *ForCausalLM on the meta device
    layers_path: str  # qualified name of the decoder-layer ModuleList, e.g. "model.layers"
    num_layers: int
    before: frozenset[str]  # weighted modules the forward runs before the first layer (input stage)
    after: frozenset[str]  # weighted modules it runs after the last layer (output stage, head included)
    unused: frozenset[str]  # weighted modules its forward never runs
    head: str  # qualified name of the output embedding (LM head)
    layer_tuples: bool  # decoder layers return (hidden, ...) rather than hidden
    renamings: tuple[WeightRenaming, ...]  # transformers' checkpoint -> model key rules
    converters: tuple[WeightConverter, ...]
    meta_keys: frozenset[str]  # the model's state dict keys

    @property
    def head_keys(self) -> list[str]:
        """The head's parameters, e.g. ["lm_head.weight"]."""
        return [f"{self.head}.{name}" for name, _ in self.model.get_submodule(self.head).named_parameters()]

    @property
    def decoder_path(self) -> str:
        """The module whose forward loops over the layers, e.g. "model" or "model.decoder"."""
        return self.layers_path.rpartition(".")[0]

    def model_keys(self, ckpt_keys) -> dict[str, str | None]:
        """The model parameter each checkpoint tensor is loaded into, None if none (transformers' renaming rules)."""
        meta = dict.fromkeys(self.meta_keys, True)  # rename_source_key asks .get() of it
        out = {}
        for ck in ckpt_keys:
            key, _ = rename_source_key(ck, list(self.renamings), list(self.converters),
                                       self.model.base_model_prefix, meta)
            if key not in meta and ck in meta:
                key = ck
            out[ck] = key if key in meta else None
        return out

    def block_of(self, model_key: str) -> int | None:
        """The decoder layer a model parameter belongs to, None outside the layers."""
        prefix = self.layers_path + "."
        if not model_key.startswith(prefix):
            return None
        return int(model_key[len(prefix):].split(".", 1)[0])

    def side_of(self, model_key: str) -> str | None:
        """``"input"``, ``"output"`` or None for a parameter outside the layers."""
        owner = model_key.rpartition(".")[0]
        if owner in self.before:
            return "input"
        if owner in self.after:
            return "output"
        return None


def hf_config(model_dir):
    """The transformers config of a model directory; ModelError when transformers cannot read it."""
    try:
        return AutoConfig.from_pretrained(model_dir)
    except Exception as exc:  # config validation raises many types (huggingface_hub's strict dataclasses too)
        raise ModelError(f"transformers cannot read {model_dir}/config.json ({type(exc).__name__}: {exc}); is it "
                         "a Hugging Face model directory of a model type this transformers version knows?") from exc


def meta_model(config, dtype: torch.dtype | None = None) -> PreTrainedModel:
    """The ``*ForCausalLM`` of ``config`` on the meta device; ModelError if transformers has none."""
    if type(config) not in AutoModelForCausalLM._model_mapping:
        raise ModelError(f"model_type {config.model_type!r} is not supported: it is not a causal language model that "
                         "transformers can build (no *ForCausalLM class); causal LMs and tessera fx models can be "
                         "sharded")
    if type(config) in AutoModelForMaskedLM._model_mapping and not getattr(config, "is_decoder", False):
        raise ModelError(f"model_type {config.model_type!r} is not supported: this config is an encoder "
                         "(bidirectional attention, is_decoder=false); encoders are not served as generating "
                         "models")
    try:
        with torch.device("meta"):
            return AutoModelForCausalLM.from_config(config, dtype=dtype)
    except Exception as exc:  # an inconsistent config fails model construction in any number of ways
        raise ModelError(f"transformers cannot build model_type {config.model_type!r} from this config.json "
                         f"({type(exc).__name__}: {exc})") from exc


def find_layers(model: nn.Module, n: int) -> str:
    """The qualified name of the one ModuleList holding the ``n`` decoder layers."""
    found = [name for name, m in model.named_modules()
             if isinstance(m, nn.ModuleList) and len(m) == n and len({type(x) for x in m}) == 1]
    if len(found) != 1:
        raise ModelError(f"cannot tell which module list holds the {n} decoder layers of {type(model).__name__} "
                         f"(candidates: {found or 'none'}); this architecture cannot be sharded")
    return found[0]


def skeleton(config) -> Skeleton:
    """Analyse ``config``'s causal LM; ModelError with the reason when it cannot be cut between layers."""
    model = meta_model(config)
    _refuse_unsupported(model, config)
    n = int(config.get_text_config().num_hidden_layers)
    layers_path = find_layers(model, n)
    try:
        layer_tuples, (before, after, unused) = False, _trace(meta_model(config), layers_path, n, config, False)
    except ModelError as first:
        try:  # layers that return (hidden, ...) tuples (GPT-J, Bloom...)
            layer_tuples, (before, after, unused) = True, _trace(meta_model(config), layers_path, n, config, True)
        except ModelError:
            raise first from None
    head = model.get_output_embeddings()
    head_name = next((name for name, m in model.named_modules() if m is head), None)
    if head_name is None or head_name not in after:
        raise ModelError(f"{type(model).__name__} has no output embedding that runs after its layers")
    mapping = get_model_conversion_mapping(model)
    return Skeleton(model, layers_path, n, frozenset(before), frozenset(after), frozenset(unused), head_name,
                    layer_tuples,
                    tuple(t for t in mapping if isinstance(t, WeightRenaming)),
                    tuple(t for t in mapping if isinstance(t, WeightConverter)), frozenset(model.state_dict()))


def _refuse_unsupported(model: PreTrainedModel, config) -> None:
    """Architectures whose stages cannot keep the state they need, refused before anything else."""
    mt = config.model_type
    recurrent = [i for i, layer in enumerate(DynamicCache(config=config).layers)
                 if isinstance(layer, LinearAttentionCacheLayerMixin)]
    if recurrent:
        raise ModelError(f"model_type {mt!r} keeps recurrent (state-space or linear-attention) state in layers "
                         f"{recurrent}; a stage's session cache holds attention keys and values only, so it cannot "
                         "be sharded yet")
    params = inspect.signature(model.forward).parameters
    if not {"inputs_embeds", "past_key_values"} <= set(params):
        raise ModelError(f"model_type {mt!r}: {type(model).__name__}.forward takes no inputs_embeds or "
                         "past_key_values, which a stage needs to receive hidden states and keep its KV cache")


def _weighted(model: nn.Module, layers_path: str):
    """Modules outside the layers that hold parameters or persistent buffers themselves."""
    for name, m in model.named_modules():
        if name == layers_path or name.startswith(layers_path + "."):
            continue
        own = list(m.named_parameters(recurse=False)) + [
            (b, t) for b, t in m.named_buffers(recurse=False) if b not in m._non_persistent_buffers_set]
        if own:
            yield name, m


def _trace(model: nn.Module, layers_path: str, n: int, config, as_tuple: bool) -> tuple[set[str], set[str], set[str]]:
    """Run the forward once on meta with recording stand-ins for the layers; classify weighted modules."""
    calls: list[str] = []
    handoffs: list[bool] = []  # layer i+1 got exactly layer i's output as its hidden states
    layers = model.get_submodule(layers_path)
    last_out: list[torch.Tensor | None] = [None]

    class Recorder(nn.Module):
        def __init__(self, i: int):
            super().__init__()
            self.i = i

        def forward(self, *args, **kwargs):
            h = args[0] if args else kwargs["hidden_states"]
            if self.i > 0:
                handoffs.append(h is last_out[0])
            calls.append(f"#{self.i}")
            last_out[0] = h
            return (h,) if as_tuple else h

    for i in range(n):
        layers[i] = Recorder(i)
    weighted = dict(_weighted(model, layers_path))
    for name, m in weighted.items():
        m.register_forward_hook(lambda *_a, _n=name: calls.append(_n))
    emb = model.get_input_embeddings()
    x = torch.zeros(1, 2, emb.weight.shape[1], device="meta")  # embeddings in: no token-id checks on meta
    try:
        with torch.no_grad():
            model(inputs_embeds=x, past_key_values=DynamicCache(config=config), use_cache=True)
    except Exception as exc:  # any failure means the structure cannot be seen
        raise ModelError(f"cannot trace {type(model).__name__}'s forward to find its stages ({type(exc).__name__}: "
                         f"{exc}); this architecture cannot be sharded") from exc
    order = [c for c in calls if c.startswith("#")]
    if order != [f"#{i}" for i in range(n)]:
        raise ModelError(f"{type(model).__name__} does not run its {n} layers once each in order; it cannot be cut "
                         "into contiguous spans")
    calls.insert(0, next(name for name, m in model.named_modules() if m is emb))
    first, last = calls.index("#0"), calls.index(f"#{n - 1}")
    before, after, unused = set(), set(), set()
    for name in weighted:
        at = [i for i, c in enumerate(calls) if c == name]
        if at and max(at) < first:
            before.add(name)
        elif at and min(at) > last:
            after.add(name)
        elif at:
            raise ModelError(f"module {name} of {type(model).__name__} runs between or on both sides of the decoder "
                             "layers; its weights cannot be given to one stage, so it cannot be sharded")
        else:
            unused.add(name)
    if not all(handoffs):
        raise ModelError(f"{type(model).__name__} changes the hidden states between decoder layers; a stage boundary "
                         "would lose that, so it cannot be sharded")
    return before, after, unused
