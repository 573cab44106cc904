"""Getting weights into a GPTModel: OpenAI's GPT-2 from the Hugging Face Hub or a local copy, a
state dict saved from the book's GPTModel, and this project's own fine-tuned models.

Base models (`load_base_model`) are named by a spec:
  "gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl"  the Hub repo openai-community/<name>
  "hf:OWNER/REPO"                                  any GPT-2-architecture repo on the Hub
  a path                                           a .safetensors file, a folder in the Hub's
                                                   layout (model.safetensors + config.json),
                                                   or a .pth/.pt/.bin state dict

A Hub spec loads one commit of its repository: the one `revision` (model.revision: a branch,
tag or commit; empty = main) names, resolved by huggingface_hub (online, by asking the Hub;
with HF_HUB_OFFLINE=1, from its cache's refs/). `hub_commit` resolves it without loading, for
the stage cache: a new commit on the Hub makes the stages that load the model stale.

Two key layouts are recognised by their names: Hugging Face's GPT-2 (`wte.weight`,
`h.0.attn.c_attn.weight`, ..., with or without a `transformer.` prefix) and the book's
(`tok_emb.weight`, `trf_blocks.0.att.W_query.weight`, ...).

The model's shape comes from the tensors themselves as far as they tell it (vocabulary,
context length, embedding size, layers, qkv bias, whether the head is tied), then from a JSON
file beside the weights (config.json, or <stem>.json), then from `shape_overrides`. Only the
number of heads cannot be read off the tensors; without a JSON file or an override it is
taken from the GPT-2 size with the same width and depth.

Fine-tuned models (`save_finetuned`, `load_finetuned`) are a folder with model.safetensors
and model.json (the shape plus what the caller records: tokenizer, template, base model...).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch

from evalpipe.errors import EvalpipeError
from evalpipe.gpt2.model import PRESETS, GPTConfig, GPTModel
from evalpipe.io import (
    DataError,
    atomic_path,
    read_json_object,
    sha256_file_remembered,
    write_json,
)

HUB_OWNER = "openai-community"  # where OpenAI's GPT-2 checkpoints live on the Hub
WEIGHTS_FILE = "model.safetensors"
HF_CONFIG_FILE = "config.json"
FINETUNED_CONFIG_FILE = "model.json"
FINETUNED_FORMAT = "evalpipe-gpt"
STATE_DICT_SUFFIXES = (".pth", ".pt", ".bin")


class WeightsError(EvalpipeError):  # EvalpipeError is a ValueError
    """Weights that cannot be found or loaded; the message names the file, tensor or repo."""


@dataclass
class LoadedModel:
    model: GPTModel
    config: GPTConfig
    source: str  # where the weights came from, for people to read
    sha256: str  # of the weights file
    revision: str | None = None  # the Hub commit they come from; None for local files


# -- entry points -------------------------------------------------------------------------------

def load_base_model(spec: str, shape_overrides: dict | None = None, *,
                    cache_dir: str | Path | None = None, revision: str = "") -> LoadedModel:
    """The model named by `spec` (see the module doc), in eval mode on the CPU; `revision`
    picks the commit of a Hub spec."""
    overrides = dict(shape_overrides or {})
    commit = hub_commit(spec, revision, cache_dir=cache_dir)
    if commit is not None:
        return _load_from_hub(hub_repo(spec), overrides, cache_dir, commit)

    path = Path(spec).expanduser()
    if not path.exists():
        raise WeightsError(f"model {spec!r} is neither a GPT-2 preset ({', '.join(PRESETS)}), "
                           f"nor hf:OWNER/REPO, nor an existing file or folder")
    if _is_finetuned_folder(path):
        return load_finetuned(path)
    weights = _weights_in(path)
    if weights is None:
        raise WeightsError(f"{path} holds no {WEIGHTS_FILE} (nor pytorch_model.bin)")
    return _load_file(weights, _read_json_beside(weights), overrides, source=str(weights))


def hub_repo(spec: str) -> str | None:
    """The Hub repository a spec names (module doc), or None for any other spec."""
    if spec in PRESETS:
        return f"{HUB_OWNER}/{spec}"
    if not spec.startswith("hf:"):
        return None
    repo_id = spec[len("hf:"):]
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", repo_id):
        raise WeightsError(f"model spec {spec!r}: expected hf:OWNER/REPO")
    return repo_id


# Commits resolved online, per (repo, revision, cache): one process loads the commit its stage
# cache recorded, even if the Hub moves on in between. Offline the cache's refs/ decide.
_ONLINE_COMMITS: dict[tuple[str, str, str], str] = {}


def hub_commit(spec: str, revision: str = "", *,
               cache_dir: str | Path | None = None) -> str | None:
    """The commit of the Hub repository `spec` names that `revision` (empty = main) resolves
    to, the folder name huggingface_hub caches it under (snapshots/<commit>/); None for a
    spec that is not on the Hub. Fetches the repository's config.json, the way to ask
    huggingface_hub that works online and offline alike."""
    repo_id = hub_repo(spec)
    if repo_id is None:
        if revision:
            raise WeightsError(f"model.revision {revision!r} picks a commit of a Hugging Face "
                               f"Hub model; {spec!r} is not one")
        return None
    from huggingface_hub import constants

    key = (repo_id, revision, str(cache_dir))
    if not constants.HF_HUB_OFFLINE and key in _ONLINE_COMMITS:
        return _ONLINE_COMMITS[key]
    commit = _hub_file(repo_id, HF_CONFIG_FILE, cache_dir, revision or None).parent.name
    if not constants.HF_HUB_OFFLINE:
        _ONLINE_COMMITS[key] = commit
    return commit


def local_files(spec: str) -> list[Path]:
    """The local files that load_base_model(spec) reads: weights and the JSON that shapes
    them; none for a Hub spec or a path that does not exist. The stage cache hashes them, so
    a checkpoint replaced in place reruns the stages that use it."""
    if spec in PRESETS or spec.startswith("hf:"):
        return []
    path = Path(spec).expanduser()
    if not path.exists():
        return []
    if _is_finetuned_folder(path):
        return [path / WEIGHTS_FILE, path / FINETUNED_CONFIG_FILE]
    weights = _weights_in(path)
    if weights is None:
        return []
    beside = _json_path_beside(weights)
    return [weights] + ([beside] if beside else [])


def _is_finetuned_folder(path: Path) -> bool:
    return path.is_dir() and (path / FINETUNED_CONFIG_FILE).exists() and \
        (path / WEIGHTS_FILE).exists()


def _weights_in(path: Path) -> Path | None:
    """The weights file a path names: itself, or in a folder the Hub layout's file."""
    if not path.is_dir():
        return path
    return next((path / name for name in (WEIGHTS_FILE, "pytorch_model.bin")
                 if (path / name).exists()), None)


def save_finetuned(model: GPTModel, config: GPTConfig, out_dir: str | Path, meta: dict) -> None:
    """Write out_dir/model.safetensors and out_dir/model.json, each atomically (a temporary
    file in the same folder, then a rename). A tied head is stored once, as tok_emb.weight."""
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    clashes = sorted({"format", "config", "weights_sha256"} & set(meta))
    if clashes:
        raise ValueError(f"save_finetuned: meta may not set {', '.join(clashes)}")
    state = {name: tensor.detach().cpu().contiguous()
             for name, tensor in model.state_dict().items()}
    if config.tie_weights:
        del state["out_head.weight"]  # the same tensor as tok_emb.weight

    weights_path = out_dir / WEIGHTS_FILE
    with atomic_path(weights_path) as tmp_path:
        save_file(state, str(tmp_path))
    # The hash ties the two files together: load_finetuned refuses a pair from two saves.
    write_json(out_dir / FINETUNED_CONFIG_FILE, {
        "format": FINETUNED_FORMAT, "config": config.to_dict(),
        "weights_sha256": sha256_file_remembered(weights_path), **meta})


def load_finetuned(folder: str | Path) -> LoadedModel:
    """A model written by save_finetuned, in eval mode on the CPU."""
    folder = Path(folder)
    config_path, weights_path = folder / FINETUNED_CONFIG_FILE, folder / WEIGHTS_FILE
    for path in (config_path, weights_path):
        if not path.exists():
            raise WeightsError(f"fine-tuned model: {path} not found")
    info = _read_json(config_path)
    if info.get("format") != FINETUNED_FORMAT or "config" not in info:
        raise WeightsError(f"{config_path} is not a model.json written by evalpipe")
    try:
        config = GPTConfig.from_dict(info["config"])
    except (TypeError, ValueError) as err:
        raise WeightsError(f"{config_path}: {err}") from None
    sha256 = sha256_file_remembered(weights_path)
    if info.get("weights_sha256") not in (None, sha256):
        raise WeightsError(f"{weights_path} is not the file {config_path} was written with "
                           f"(SHA-256 differs); save the model again")
    state = _read_state_dict(weights_path)
    model = _build_and_fill(config, state, weights_path)
    return LoadedModel(model=model, config=config, source=f"fine-tuned model {folder}",
                       sha256=sha256)


# -- the Hugging Face Hub -----------------------------------------------------------------------

def _load_from_hub(repo_id: str, overrides: dict, cache_dir, commit: str) -> LoadedModel:
    """Fetch config.json and model.safetensors of one commit through huggingface_hub, which
    caches, resumes, shows progress and honours HF_HUB_OFFLINE."""
    config_path = _hub_file(repo_id, HF_CONFIG_FILE, cache_dir, commit)
    weights_path = _hub_file(repo_id, WEIGHTS_FILE, cache_dir, commit)
    declared = _read_json(config_path)
    loaded = _load_file(weights_path, (declared, config_path), overrides,
                        source=f"{repo_id} from the Hugging Face Hub")
    loaded.revision = commit
    return loaded


def _hub_file(repo_id: str, filename: str, cache_dir, revision: str | None) -> Path:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.utils import (
        EntryNotFoundError,
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        return Path(hf_hub_download(repo_id, filename, revision=revision, cache_dir=cache_dir))
    except LocalEntryNotFoundError:  # offline, or no connection, and not in the cache
        at = f" --revision {revision}" if revision else ""
        raise WeightsError(
            f"cannot fetch {repo_id} from the Hugging Face Hub (offline and {filename} not "
            f"cached{f' at revision {revision}' if revision else ''}): give a "
            f"local path with model.base=PATH, or warm the cache with 'huggingface-cli download "
            f"{repo_id}{at}' on a machine with internet") from None
    except RevisionNotFoundError:
        raise WeightsError(f"{repo_id} on the Hugging Face Hub has no revision {revision!r} "
                           f"(model.revision)") from None
    except GatedRepoError:
        raise WeightsError(f"{repo_id} on the Hugging Face Hub is gated: accept its terms and "
                           f"log in with 'huggingface-cli login'") from None
    except RepositoryNotFoundError:
        raise WeightsError(f"no repository {repo_id} on the Hugging Face Hub (or it is "
                           f"private)") from None
    except EntryNotFoundError:
        raise WeightsError(f"{repo_id} on the Hugging Face Hub has no {filename}") from None
    except HfHubHTTPError as err:
        first_line = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise WeightsError(f"cannot fetch {filename} of {repo_id} from the Hugging Face Hub: "
                           f"{first_line}") from None


# -- files and their shapes ---------------------------------------------------------------------

def _load_file(path: Path, declared: tuple[dict, Path] | None, overrides: dict,
               source: str) -> LoadedModel:
    """Build the model for one weights file; `declared` is a JSON config and where it was."""
    state = _read_state_dict(path)
    state = _to_book_keys(state, path)
    config = _resolve_config(state, declared, overrides, path)
    if not config.tie_weights and "out_head.weight" not in state and "tok_emb.weight" in state:
        # The book's recipe (its load_weights_into_gpt): an untied head starts as a copy of
        # the token embedding, its own storage, and is trained apart from it.
        state["out_head.weight"] = state["tok_emb.weight"].clone()
    model = _build_and_fill(config, state, path)
    return LoadedModel(model=model, config=config, source=source, sha256=sha256_file_remembered(path))


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.exists():
        raise WeightsError(f"weights file {path} not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        if path.suffix in STATE_DICT_SUFFIXES:
            loaded = torch.load(path, map_location="cpu", weights_only=True)
            # The book's chapter 5 saves {"model_state_dict": ..., "optimizer_state_dict": ...}.
            for key in ("model_state_dict", "state_dict", "model"):
                if isinstance(loaded, dict) and isinstance(loaded.get(key), dict):
                    loaded = loaded[key]
            if not isinstance(loaded, dict):
                raise WeightsError(f"{path} holds a {type(loaded).__name__}, not a state dict")
            return loaded
    except WeightsError:
        raise
    except Exception as err:  # truncated or foreign files: say which file, then why
        first_line = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise WeightsError(f"cannot read weights file {path}: {first_line}") from None
    raise WeightsError(f"weights file {path}: unknown format (expected .safetensors or "
                       f"{'/'.join(STATE_DICT_SUFFIXES)})")


def _read_json(path: Path) -> dict:
    try:
        return read_json_object(path)
    except DataError as err:  # the same one line, as the error loading weights raises
        raise WeightsError(str(err)) from None


def _json_path_beside(weights: Path) -> Path | None:
    """A config next to a weights file: <stem>.json, else config.json in the same folder."""
    for candidate in (weights.with_suffix(".json"), weights.parent / HF_CONFIG_FILE):
        if candidate.exists():
            return candidate
    return None


def _read_json_beside(weights: Path) -> tuple[dict, Path] | None:
    path = _json_path_beside(weights)
    return None if path is None else (_read_json(path), path)


def _declared_shape(values: dict, path: Path) -> dict:
    """GPTConfig fields from a JSON config in the book's names or Hugging Face's."""
    if values.get("format") == FINETUNED_FORMAT and isinstance(values.get("config"), dict):
        values = values["config"]
    hf_names = {"n_embd": "emb_dim", "n_layer": "n_layers", "n_head": "n_heads",
                "n_positions": "context_length", "vocab_size": "vocab_size",
                "tie_word_embeddings": "tie_weights"}
    book_names = {"vocab_size", "context_length", "emb_dim", "n_heads", "n_layers", "drop_rate",
                  "qkv_bias", "tie_weights"}
    if values.get("model_type", "gpt2") != "gpt2":
        raise WeightsError(f"{path}: model_type {values['model_type']!r} is not GPT-2; only "
                           f"GPT-2-architecture models load")
    architectures = values.get("architectures", [])
    if not (isinstance(architectures, list) and all(
            isinstance(name, str) and name.startswith("GPT2") for name in architectures)):
        raise WeightsError(f"{path}: architectures {architectures!r} is not GPT-2; only "
                           f"GPT-2-architecture models load")
    if values.get("activation_function", "gelu_new") not in ("gelu_new", "gelu_pytorch_tanh"):
        raise WeightsError(f"{path}: activation_function {values['activation_function']!r}; "
                           f"this GPT-2 uses the tanh GELU (gelu_new)")
    _check_declared_types(values, path)
    if values.get("model_type") == "gpt2" or any(name in values for name in HF_REQUIRED):
        # Every config.json transformers writes has all three: one without them is damaged,
        # and a head count guessed from GPT-2's sizes could be silently wrong.
        for name in HF_REQUIRED:
            if name not in values:
                raise WeightsError(f"{path}: {name} is missing (a GPT-2 config.json names "
                                   f"{', '.join(HF_REQUIRED)})")
    shape = {field: values[name] for name, field in hf_names.items() if name in values}
    if "n_positions" not in values and "n_ctx" in values:  # older GPT-2 configs
        shape["context_length"] = values["n_ctx"]
    shape.update({name: values[name] for name in book_names if name in values})
    if "n_embd" in values:
        # Hugging Face GPT-2: every checkpoint has qkv biases, and the head is tied unless
        # the config says otherwise (transformers' default).
        shape.setdefault("qkv_bias", True)
        shape.setdefault("tie_weights", True)
    if not shape:
        raise WeightsError(f"{path} names no model shape (n_embd/n_layer/n_head or "
                           f"emb_dim/n_layers/n_heads)")
    return shape


HF_REQUIRED = ("n_embd", "n_layer", "n_head")
SIZE_KEYS = ("n_embd", "n_layer", "n_head", "n_positions", "n_ctx", "vocab_size",
             "emb_dim", "n_layers", "n_heads", "context_length")
FLAG_KEYS = ("tie_word_embeddings", "qkv_bias", "tie_weights")


def _check_declared_types(values: dict, path: Path) -> None:
    """The shape keys of a JSON config, in either naming, have the types GPTConfig needs: a
    string "768" or a 12.5 would otherwise fail deep inside torch, with a traceback."""
    for name in SIZE_KEYS:
        value = values.get(name)
        if name in values and not (type(value) is int and value >= 1):
            raise WeightsError(f"{path}: {name}: expected a positive integer, got {value!r}")
    for name in FLAG_KEYS:
        if name in values and not isinstance(values[name], bool):
            raise WeightsError(f"{path}: {name}: expected true or false, got {values[name]!r}")
    rate = values.get("drop_rate", 0.0)
    if not (type(rate) in (int, float) and 0 <= rate < 1):
        raise WeightsError(f"{path}: drop_rate: expected a number from 0 to below 1, got "
                           f"{rate!r}")


def _resolve_config(state: dict, declared: tuple[dict, Path] | None, overrides: dict,
                    path: Path) -> GPTConfig:
    """Shape read off the tensors, then the JSON config, then the overrides (module doc)."""
    shape = _shape_from_tensors(state)
    if declared is not None:
        shape.update(_declared_shape(*declared))
    unknown = sorted(set(overrides) - set(GPTConfig.__dataclass_fields__))
    if unknown:
        raise WeightsError(f"unknown model shape settings: {', '.join(unknown)}")
    shape.update(overrides)
    if "n_heads" not in shape:
        same_size = [name for name, preset in PRESETS.items()
                     if (preset.emb_dim, preset.n_layers) == (shape.get("emb_dim"),
                                                                shape.get("n_layers"))]
        if not same_size:
            raise WeightsError(f"cannot tell the number of attention heads of {path}: give "
                               f"model.n_heads, or a config.json beside it")
        shape["n_heads"] = PRESETS[same_size[0]].n_heads
    config = GPTConfig(**shape)
    if config.emb_dim % config.n_heads:
        raise WeightsError(f"{path}: emb_dim {config.emb_dim} is not divisible by n_heads "
                           f"{config.n_heads}")
    return config


def _shape_from_tensors(state: dict) -> dict:
    shape: dict = {}
    if "tok_emb.weight" in state:
        shape["vocab_size"], shape["emb_dim"] = state["tok_emb.weight"].shape
    if "pos_emb.weight" in state:
        shape["context_length"] = state["pos_emb.weight"].shape[0]
    layers = {int(m.group(1)) for key in state if (m := re.match(r"trf_blocks\.(\d+)\.", key))}
    if layers:
        shape["n_layers"] = max(layers) + 1
    shape["qkv_bias"] = "trf_blocks.0.att.W_query.bias" in state
    head, embedding = state.get("out_head.weight"), state.get("tok_emb.weight")
    shape["tie_weights"] = head is None or (embedding is not None and torch.equal(head, embedding))
    return shape


def _to_book_keys(state: dict, path: Path) -> dict[str, torch.Tensor]:
    """The book's key names, whichever layout the file uses."""
    names = list(state)
    if any(name == "tok_emb.weight" for name in names):
        # The book's MultiHeadAttention keeps its causal mask as a buffer; ours needs none.
        return {name: tensor for name, tensor in state.items()
                if not re.fullmatch(r"trf_blocks\.\d+\.att\.mask", name)}
    if any(name in ("wte.weight", "transformer.wte.weight") for name in names):
        return _book_keys_from_hf(state, path)
    raise WeightsError(f"{path} holds neither GPT-2 weights (wte.weight) nor the book's GPTModel "
                       f"(tok_emb.weight); its first keys: {', '.join(names[:3])}")


# Hugging Face GPT-2's names for the book's tensors. Outside the blocks: the book's name, theirs.
HF_TOP_TENSORS = {"tok_emb.weight": "wte.weight", "pos_emb.weight": "wpe.weight",
                  "final_norm.scale": "ln_f.weight", "final_norm.shift": "ln_f.bias"}
# In block N (trf_blocks.N. in the book, h.N. in theirs): the book's name -> (their name,
# whether to transpose it, which third of it). GPT-2 stores its projections as Conv1D, weight
# (in, out), where nn.Linear has (out, in); c_attn holds query, key and value side by side.
HF_BLOCK_TENSORS = {
    "att.W_query.weight": ("attn.c_attn.weight", True, 0),
    "att.W_key.weight": ("attn.c_attn.weight", True, 1),
    "att.W_value.weight": ("attn.c_attn.weight", True, 2),
    "att.W_query.bias": ("attn.c_attn.bias", False, 0),
    "att.W_key.bias": ("attn.c_attn.bias", False, 1),
    "att.W_value.bias": ("attn.c_attn.bias", False, 2),
    "att.out_proj.weight": ("attn.c_proj.weight", True, None),
    "att.out_proj.bias": ("attn.c_proj.bias", False, None),
    "ff.layers.0.weight": ("mlp.c_fc.weight", True, None),
    "ff.layers.0.bias": ("mlp.c_fc.bias", False, None),
    "ff.layers.2.weight": ("mlp.c_proj.weight", True, None),
    "ff.layers.2.bias": ("mlp.c_proj.bias", False, None),
    "norm1.scale": ("ln_1.weight", False, None),
    "norm1.shift": ("ln_1.bias", False, None),
    "norm2.scale": ("ln_2.weight", False, None),
    "norm2.shift": ("ln_2.bias", False, None),
}


def _book_keys_from_hf(state: dict, path: Path) -> dict[str, torch.Tensor]:
    """Hugging Face GPT-2 keys to the book's (HF_TOP_TENSORS, HF_BLOCK_TENSORS)."""
    remaining = {name.removeprefix("transformer."): tensor for name, tensor in state.items()}
    # Old checkpoints carry the causal mask as buffers: attn.bias and attn.masked_bias.
    remaining = {name: tensor for name, tensor in remaining.items()
                 if not re.fullmatch(r"h\.\d+\.attn\.(masked_)?bias", name)}
    used: set[str] = set()

    def take(name: str) -> torch.Tensor:
        if name not in remaining:
            raise WeightsError(f"{path} lacks tensor {name}")
        used.add(name)
        return remaining[name]

    book = {ours: take(theirs) for ours, theirs in HF_TOP_TENSORS.items()}
    if "lm_head.weight" in remaining:
        book["out_head.weight"] = take("lm_head.weight")
    layers = sorted({int(m.group(1)) for name in remaining if (m := re.match(r"h\.(\d+)\.", name))})
    for i in layers:
        for ours, (theirs, transpose, third) in HF_BLOCK_TENSORS.items():
            tensor = take(f"h.{i}.{theirs}")
            if transpose:
                tensor = tensor.t()
            if third is not None:
                tensor = tensor.chunk(3, dim=0)[third]
            book[f"trf_blocks.{i}.{ours}"] = tensor
    unused = [name for name in remaining if name not in used]
    if unused:
        raise WeightsError(f"{path} holds tensors a GPT-2 does not have: "
                           f"{_first_few(unused)}")
    return book


def _build_and_fill(config: GPTConfig, state: dict, path: Path) -> GPTModel:
    """A GPTModel of this shape holding exactly these tensors (as float32); any missing, extra
    or misshapen tensor is an error that names it."""
    state = dict(state)
    if config.tie_weights and "out_head.weight" in state and "tok_emb.weight" in state:
        if not torch.equal(state["out_head.weight"], state["tok_emb.weight"]):
            raise WeightsError(f"{path}: out_head.weight differs from tok_emb.weight, but the "
                               f"model's head is tied (tie_weights)")
        del state["out_head.weight"]
    # Built on the meta device: no time spent on a random initialisation that the loaded
    # tensors replace, and no second copy of the weights in memory.
    with torch.device("meta"):
        model = GPTModel(config)
    expected = model.state_dict()
    if config.tie_weights:
        del expected["out_head.weight"]  # the same tensor as tok_emb.weight
    missing = [name for name in expected if name not in state]
    if missing:
        raise WeightsError(f"{path} lacks {len(missing)} tensor(s) the model needs: "
                           f"{_first_few(missing)}")
    unexpected = [name for name in state if name not in expected]
    if unexpected:
        raise WeightsError(f"{path} holds {len(unexpected)} tensor(s) the model does not have: "
                           f"{_first_few(unexpected)}")
    for name, tensor in state.items():
        if tuple(tensor.shape) != tuple(expected[name].shape):
            raise WeightsError(f"{path}: tensor {name} has shape {tuple(tensor.shape)}, the "
                               f"model expects {tuple(expected[name].shape)}")
    model.load_state_dict({name: tensor.to(torch.float32).contiguous()
                           for name, tensor in state.items()}, strict=False, assign=True)
    if config.tie_weights:
        model.out_head.weight = model.tok_emb.weight  # assign=True replaced the shared tensor
    return model.eval()


def _first_few(names, count: int = 3) -> str:
    names = list(names)
    more = f" (and {len(names) - count} more)" if len(names) > count else ""
    return ", ".join(names[:count]) + more
