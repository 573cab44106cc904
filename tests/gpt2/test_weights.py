"""Loading GPT-2 weights (Hub layout, local files, book state dicts) and fine-tuned models.

All offline: the Hub tests lay out a huggingface_hub cache by hand, exactly as the library
writes one, and switch huggingface_hub to offline mode.
"""

import hashlib
import json
import os

import pytest
import torch
from safetensors.torch import load_file, save_file

from evalpipe.gpt2.model import GPTConfig, GPTModel
from evalpipe.gpt2.weights import (
    WeightsError,
    load_base_model,
    load_finetuned,
    save_finetuned,
)

HF_SHAPE = dict(n_embd=64, n_layer=2, n_head=4, n_positions=64, vocab_size=1000)
BOOK_SHAPE = GPTConfig(vocab_size=300, context_length=40, emb_dim=48, n_heads=6, n_layers=2,
                       qkv_bias=False, tie_weights=False)


@pytest.fixture
def offline(monkeypatch):
    """huggingface_hub in offline mode (it reads HF_HUB_OFFLINE once, at import)."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


def tiny_hf_model(tie_word_embeddings=True, seed=0):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(**HF_SHAPE, tie_word_embeddings=tie_word_embeddings,
                        bos_token_id=0, eos_token_id=0)
    model = GPT2LMHeadModel(config).eval()
    # Every parameter random, biases and LayerNorms included: transformers initialises
    # biases to zero and LayerNorms to one and zero, and a key mapping that swapped two of
    # those (query and key biases, ln_1 and ln_2) would still give the same logits.
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0.0, 0.2)
    return model


def assert_same_logits(loaded, hf_model, atol=1e-4):
    generator = torch.Generator().manual_seed(1)
    idx = torch.randint(0, HF_SHAPE["vocab_size"], (2, 23), generator=generator)
    with torch.no_grad():
        ours, theirs = loaded.model(idx), hf_model(idx).logits
    assert (ours - theirs).abs().max().item() < atol


def openai_style_tensors(hf_model) -> dict:
    """The keys of openai-community/gpt2's model.safetensors: no `transformer.` prefix, no
    lm_head, and the old causal-mask buffers h.N.attn.bias."""
    tensors = {name.removeprefix("transformer."): tensor.contiguous()
               for name, tensor in hf_model.state_dict().items() if name != "lm_head.weight"}
    positions = HF_SHAPE["n_positions"]
    for layer in range(HF_SHAPE["n_layer"]):
        tensors[f"h.{layer}.attn.bias"] = torch.tril(torch.ones(positions, positions))[None, None]
    return tensors


FIRST_COMMIT = "0123456789abcdef0123456789abcdef01234567"
SECOND_COMMIT = "89abcdef0123456789abcdef0123456789abcdef"


def lay_out_hub_cache(cache_dir, repo_id, files: dict[str, bytes],
                      commit: str = FIRST_COMMIT) -> None:
    """A huggingface_hub cache holding `files` of repo_id at `commit`, and main at that
    commit: the content in blobs/, refs/main naming the commit, snapshots/<commit>/ linking
    to the blobs. Called again with another commit, it adds that commit beside the first."""
    repo = cache_dir / ("models--" + repo_id.replace("/", "--"))
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs/main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for name, content in files.items():
        blob = repo / "blobs" / hashlib.sha256(content).hexdigest()
        blob.write_bytes(content)
        os.symlink(os.path.relpath(blob, snapshot), snapshot / name)


def safetensors_bytes(tensors: dict, tmp_path) -> bytes:
    path = tmp_path / "scratch.safetensors"
    save_file(tensors, str(path))
    content = path.read_bytes()
    path.unlink()
    return content


def book_model(config=BOOK_SHAPE, seed=0) -> GPTModel:
    torch.manual_seed(seed)
    model = GPTModel(config).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0.0, 0.2)
    return model


def book_state_dict(model: GPTModel) -> dict:
    """What the book's GPTModel.state_dict() holds: its causal masks as buffers, and (untied
    in the book) out_head.weight."""
    state = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    context = model.cfg.context_length
    for layer in range(model.cfg.n_layers):
        state[f"trf_blocks.{layer}.att.mask"] = torch.triu(torch.ones(context, context), 1)
    return state


def same_logits_exactly(a: GPTModel, b: GPTModel) -> bool:
    idx = torch.randint(0, a.cfg.vocab_size, (2, 11), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        return torch.equal(a(idx), b(idx))


# -- (a) a save_pretrained folder ---------------------------------------------------------------

@pytest.mark.parametrize("tied", [True, False])
def test_save_pretrained_folder_gives_transformers_logits(tmp_path, tied):
    hf_model = tiny_hf_model(tie_word_embeddings=tied)
    hf_model.save_pretrained(tmp_path / "tiny", safe_serialization=True)
    loaded = load_base_model(str(tmp_path / "tiny"))
    assert loaded.config == GPTConfig(vocab_size=1000, context_length=64, emb_dim=64, n_heads=4,
                                      n_layers=2, qkv_bias=True, tie_weights=tied)
    assert (loaded.model.out_head.weight is loaded.model.tok_emb.weight) == tied
    assert_same_logits(loaded, hf_model)
    weights = tmp_path / "tiny/model.safetensors"
    assert loaded.sha256 == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert loaded.source == str(weights)
    assert not loaded.model.training


# -- (b), (c) the Hugging Face Hub, from a cache ------------------------------------------------

def test_preset_name_loads_from_the_hub_cache(tmp_path, offline):
    hf_model = tiny_hf_model()
    weights = safetensors_bytes(openai_style_tensors(hf_model), tmp_path)
    lay_out_hub_cache(tmp_path / "hub", "openai-community/gpt2", {
        "config.json": hf_model.config.to_json_string().encode(), "model.safetensors": weights})
    loaded = load_base_model("gpt2", cache_dir=tmp_path / "hub")
    assert loaded.source == "openai-community/gpt2 from the Hugging Face Hub"
    assert loaded.sha256 == hashlib.sha256(weights).hexdigest()
    assert loaded.config == GPTConfig(vocab_size=1000, context_length=64, emb_dim=64, n_heads=4,
                                      n_layers=2, qkv_bias=True, tie_weights=True)
    assert_same_logits(loaded, hf_model)


def test_hf_repo_spec_loads_prefixed_keys_and_an_untied_head(tmp_path, offline):
    hf_model = tiny_hf_model(tie_word_embeddings=False, seed=3)
    tensors = {name: tensor.contiguous() for name, tensor in hf_model.state_dict().items()}
    assert "transformer.wte.weight" in tensors and "lm_head.weight" in tensors
    lay_out_hub_cache(tmp_path / "hub", "someone/tiny-gpt2", {
        "config.json": hf_model.config.to_json_string().encode(),
        "model.safetensors": safetensors_bytes(tensors, tmp_path)})
    loaded = load_base_model("hf:someone/tiny-gpt2", cache_dir=tmp_path / "hub")
    assert loaded.source == "someone/tiny-gpt2 from the Hugging Face Hub"
    assert loaded.config.tie_weights is False
    assert_same_logits(loaded, hf_model)


@pytest.mark.parametrize("swap", [("att.W_query.bias", "att.W_key.bias"),
                                  ("norm1.scale", "norm2.scale"),
                                  ("norm1.shift", "norm2.shift")])
def test_the_parity_check_catches_a_swapped_key_mapping(tmp_path, monkeypatch, swap):
    """The logits comparison above can fail: with two entries of the Hugging Face key mapping
    swapped, the loaded model no longer matches transformers' (the reference's biases and
    LayerNorms are random, not zero and one)."""
    import evalpipe.gpt2.weights

    hf_model = tiny_hf_model()
    hf_model.save_pretrained(tmp_path / "tiny", safe_serialization=True)
    assert_same_logits(load_base_model(str(tmp_path / "tiny")), hf_model)

    table = evalpipe.gpt2.weights.HF_BLOCK_TENSORS
    first, second = swap
    first_source, second_source = table[first], table[second]
    monkeypatch.setitem(table, first, second_source)
    monkeypatch.setitem(table, second, first_source)
    with pytest.raises(AssertionError):
        assert_same_logits(load_base_model(str(tmp_path / "tiny")), hf_model)


def test_an_untied_head_from_tied_hub_weights_is_a_copy_trained_apart(tmp_path, offline):
    """model.tie_weights = "false" with GPT-2's own weights (no lm_head): the book's recipe,
    out_head a copy of the token embedding that fine-tuning then changes on its own."""
    hf_model = tiny_hf_model()
    lay_out_hub_cache(tmp_path / "hub", "openai-community/gpt2", {
        "config.json": hf_model.config.to_json_string().encode(),
        "model.safetensors": safetensors_bytes(openai_style_tensors(hf_model), tmp_path)})
    loaded = load_base_model("gpt2", {"tie_weights": False}, cache_dir=tmp_path / "hub")
    model = loaded.model
    assert loaded.config.tie_weights is False
    assert torch.equal(model.out_head.weight, model.tok_emb.weight)
    assert model.out_head.weight is not model.tok_emb.weight
    assert model.out_head.weight.data_ptr() != model.tok_emb.weight.data_ptr()
    assert_same_logits(loaded, hf_model)  # still GPT-2's logits before training
    embedding = model.tok_emb.weight.detach().clone()

    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    idx = torch.randint(0, HF_SHAPE["vocab_size"], (2, 9), generator=torch.Generator().manual_seed(3))
    model(idx).logsumexp(-1).mean().backward()
    optimizer.step()
    assert not torch.equal(model.out_head.weight, model.tok_emb.weight)
    assert not torch.equal(model.tok_emb.weight, embedding)


def two_commits_of_gpt2(tmp_path):
    """openai-community/gpt2 in a Hub cache at two commits with different weights, main at
    the second; the two reference models."""
    models = [tiny_hf_model(seed=seed) for seed in (0, 1)]
    for commit, hf_model in zip((FIRST_COMMIT, SECOND_COMMIT), models):
        lay_out_hub_cache(tmp_path / "hub", "openai-community/gpt2", {
            "config.json": hf_model.config.to_json_string().encode(),
            "model.safetensors": safetensors_bytes(openai_style_tensors(hf_model), tmp_path)},
            commit=commit)
    return models


def test_a_hub_model_is_the_commit_main_names_or_model_revision_pins(tmp_path, offline):
    from evalpipe.gpt2.weights import hub_commit

    first, second = two_commits_of_gpt2(tmp_path)
    hub = tmp_path / "hub"
    assert hub_commit("gpt2", cache_dir=hub) == SECOND_COMMIT
    loaded = load_base_model("gpt2", cache_dir=hub)
    assert loaded.revision == SECOND_COMMIT
    assert_same_logits(loaded, second)

    pinned = load_base_model("gpt2", cache_dir=hub, revision=FIRST_COMMIT)
    assert pinned.revision == hub_commit("gpt2", FIRST_COMMIT, cache_dir=hub) == FIRST_COMMIT
    assert_same_logits(pinned, first)
    assert pinned.sha256 != loaded.sha256

    # main moved back (as after 'huggingface-cli download' of another commit): main follows
    (hub / "models--openai-community--gpt2/refs/main").write_text(FIRST_COMMIT)
    assert hub_commit("gpt2", cache_dir=hub) == FIRST_COMMIT
    assert hub_commit("gpt2", "main", cache_dir=hub) == FIRST_COMMIT
    assert load_base_model("gpt2", cache_dir=hub).revision == FIRST_COMMIT

    with pytest.raises(WeightsError, match=r"^cannot fetch openai-community/gpt2 from the Hugging "
                                           r"Face Hub \(offline and config.json not cached at "
                                           r"revision v2\): .*'huggingface-cli download "
                                           r"openai-community/gpt2 --revision v2'"):
        load_base_model("gpt2", cache_dir=hub, revision="v2")


def test_local_models_have_no_commit_and_refuse_a_revision(tmp_path):
    from evalpipe.gpt2.weights import hub_commit

    tiny_hf_model().save_pretrained(tmp_path / "tiny", safe_serialization=True)
    assert hub_commit(str(tmp_path / "tiny")) is None
    assert load_base_model(str(tmp_path / "tiny")).revision is None
    with pytest.raises(WeightsError, match=r"^model.revision 'main' picks a commit of a Hugging "
                                           r"Face Hub model; '.*tiny' is not one$"):
        load_base_model(str(tmp_path / "tiny"), revision="main")


def test_offline_without_cache_says_what_to_do(tmp_path, offline):
    with pytest.raises(WeightsError) as caught:
        load_base_model("gpt2-medium", cache_dir=tmp_path / "empty")
    assert str(caught.value) == (
        "cannot fetch openai-community/gpt2-medium from the Hugging Face Hub (offline and "
        "config.json not cached): give a local path with model.base=PATH, or warm the cache "
        "with 'huggingface-cli download openai-community/gpt2-medium' on a machine with "
        "internet")


def test_offline_with_only_the_config_cached_names_the_weights_file(tmp_path, offline):
    lay_out_hub_cache(tmp_path / "hub", "someone/half", {
        "config.json": json.dumps({"n_embd": 64, "n_layer": 2, "n_head": 4}).encode()})
    with pytest.raises(WeightsError, match=r"^cannot fetch someone/half from the Hugging Face "
                                           r"Hub \(offline and model.safetensors not cached at "
                                           r"revision 0123456789abcdef0123456789abcdef01234567\)"):
        load_base_model("hf:someone/half", cache_dir=tmp_path / "hub")


def test_bad_specs_are_refused(tmp_path):
    with pytest.raises(WeightsError, match=r"^model spec 'hf:no-slash': expected hf:OWNER/REPO$"):
        load_base_model("hf:no-slash")
    missing = tmp_path / "nowhere.pth"
    with pytest.raises(WeightsError, match=r"neither a GPT-2 preset \(gpt2, gpt2-medium, "
                                           r"gpt2-large, gpt2-xl\), nor hf:OWNER/REPO, nor an "
                                           r"existing file or folder"):
        load_base_model(str(missing))


# -- (d) the book's state dicts -----------------------------------------------------------------

def test_book_checkpoint_round_trip_with_json_beside(tmp_path):
    model = book_model()
    path = tmp_path / "model_and_optimizer.pth"
    # The book's chapter 5 checkpoint: model and optimizer state in one dict.
    torch.save({"model_state_dict": book_state_dict(model),
                "optimizer_state_dict": {"state": {}, "param_groups": []}}, path)
    (tmp_path / "model_and_optimizer.json").write_text(json.dumps(
        {"vocab_size": 300, "context_length": 40, "emb_dim": 48, "n_heads": 6, "n_layers": 2,
         "drop_rate": 0.1, "qkv_bias": False}))
    loaded = load_base_model(str(path))
    assert loaded.config == GPTConfig(**{**BOOK_SHAPE.to_dict(), "drop_rate": 0.1})
    assert loaded.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert same_logits_exactly(loaded.model, model)


def test_book_state_dict_shape_from_tensors_and_overrides(tmp_path):
    model = book_model()
    path = tmp_path / "gpt.pth"
    torch.save(book_state_dict(model), path)
    loaded = load_base_model(str(path), {"n_heads": 6})
    # vocabulary, context, width, depth, qkv bias and untied head all read off the tensors
    assert loaded.config == BOOK_SHAPE
    assert same_logits_exactly(loaded.model, model)
    with pytest.raises(WeightsError, match=r"cannot tell the number of attention heads of "
                                           r".*gpt\.pth: give model\.n_heads"):
        load_base_model(str(path))


def test_book_state_dict_with_a_tied_head_present_or_absent(tmp_path):
    tied_shape = GPTConfig(**{**BOOK_SHAPE.to_dict(), "qkv_bias": True, "tie_weights": True})
    model = book_model(tied_shape)
    with_head = book_state_dict(model)
    assert torch.equal(with_head["out_head.weight"], with_head["tok_emb.weight"])
    without_head = {k: v for k, v in with_head.items() if k != "out_head.weight"}
    for name, state in (("with.pth", with_head), ("without.pth", without_head)):
        torch.save(state, tmp_path / name)
        loaded = load_base_model(str(tmp_path / name), {"n_heads": 6})
        assert loaded.config == tied_shape
        assert loaded.model.out_head.weight is loaded.model.tok_emb.weight
        assert same_logits_exactly(loaded.model, model)


def test_gpt2_sized_state_dict_takes_its_heads_from_the_preset(tmp_path):
    shape = GPTConfig(vocab_size=10, context_length=8, emb_dim=768, n_heads=12, n_layers=12)
    with torch.device("meta"):
        meta = GPTModel(shape)
    state = {name: torch.zeros(tensor.shape) for name, tensor in meta.state_dict().items()
             if name != "out_head.weight"}
    save_file(state, str(tmp_path / "w.safetensors"))
    assert load_base_model(str(tmp_path / "w.safetensors")).config == shape


# -- (e) what goes wrong ------------------------------------------------------------------------

def test_shape_mismatch_names_the_tensor_and_both_shapes(tmp_path):
    torch.save(book_state_dict(book_model()), tmp_path / "gpt.pth")
    with pytest.raises(WeightsError) as caught:
        load_base_model(str(tmp_path / "gpt.pth"), {"n_heads": 6, "context_length": 32})
    assert str(caught.value) == (f"{tmp_path / 'gpt.pth'}: tensor pos_emb.weight has shape "
                                 f"(40, 48), the model expects (32, 48)")


def test_missing_and_unexpected_tensors_are_named(tmp_path):
    state = book_state_dict(book_model())
    del state["trf_blocks.1.ff.layers.2.bias"]
    torch.save(state, tmp_path / "missing.pth")
    with pytest.raises(WeightsError, match=r"missing\.pth lacks 1 tensor\(s\) the model needs: "
                                           r"trf_blocks\.1\.ff\.layers\.2\.bias$"):
        load_base_model(str(tmp_path / "missing.pth"), {"n_heads": 6})

    state = book_state_dict(book_model())
    for extra in ("lora_a", "lora_b", "lora_c", "lora_d"):
        state[f"trf_blocks.0.att.{extra}"] = torch.zeros(2)
    torch.save(state, tmp_path / "extra.pth")
    with pytest.raises(WeightsError, match=r"extra\.pth holds 4 tensor\(s\) the model does not "
                                           r"have: trf_blocks\.0\.att\.lora_a, "
                                           r"trf_blocks\.0\.att\.lora_b, trf_blocks\.0\.att\."
                                           r"lora_c \(and 1 more\)$"):
        load_base_model(str(tmp_path / "extra.pth"), {"n_heads": 6})


def test_missing_and_unexpected_hub_style_tensors_are_named(tmp_path):
    tensors = openai_style_tensors(tiny_hf_model())
    config = json.dumps(HF_SHAPE)
    folder = tmp_path / "missing"
    folder.mkdir()
    (folder / "config.json").write_text(config)
    save_file({k: v for k, v in tensors.items() if k != "h.1.mlp.c_fc.bias"},
              str(folder / "model.safetensors"))
    with pytest.raises(WeightsError,
                       match=r"model\.safetensors lacks tensor h\.1\.mlp\.c_fc\.bias$"):
        load_base_model(str(folder))

    folder = tmp_path / "extra"
    folder.mkdir()
    (folder / "config.json").write_text(config)
    save_file({**tensors, "h.0.attn.q_norm.weight": torch.ones(64)},
              str(folder / "model.safetensors"))
    with pytest.raises(WeightsError, match=r"model\.safetensors holds tensors a GPT-2 does not "
                                           r"have: h\.0\.attn\.q_norm\.weight$"):
        load_base_model(str(folder))


def test_missing_files_and_foreign_files_are_named(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(WeightsError, match=r"empty holds no model\.safetensors"):
        load_base_model(str(tmp_path / "empty"))
    save_file({"encoder.weight": torch.zeros(2)}, str(tmp_path / "bert.safetensors"))
    with pytest.raises(WeightsError, match=r"bert\.safetensors holds neither GPT-2 weights "
                                           r"\(wte\.weight\) nor the book's GPTModel "
                                           r"\(tok_emb\.weight\); its first keys: encoder\.weight"):
        load_base_model(str(tmp_path / "bert.safetensors"))
    (tmp_path / "broken.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(WeightsError, match=r"^cannot read weights file .*broken\.safetensors: "):
        load_base_model(str(tmp_path / "broken.safetensors"))
    (tmp_path / "weights.npz").write_bytes(b"")
    with pytest.raises(WeightsError, match=r"weights\.npz: unknown format"):
        load_base_model(str(tmp_path / "weights.npz"))


def test_a_tied_config_with_a_different_head_is_refused(tmp_path):
    torch.save(book_state_dict(book_model()), tmp_path / "untied.pth")  # head != embedding
    with pytest.raises(WeightsError, match=r"out_head\.weight differs from tok_emb\.weight, but "
                                           r"the model's head is tied"):
        load_base_model(str(tmp_path / "untied.pth"), {"n_heads": 6, "tie_weights": True})


# -- (f) fine-tuned models ----------------------------------------------------------------------

@pytest.mark.parametrize("tied", [True, False])
def test_save_and_load_finetuned_round_trip(tmp_path, tied):
    config = GPTConfig(**{**BOOK_SHAPE.to_dict(), "tie_weights": tied, "qkv_bias": True})
    model = book_model(config)
    meta = {"tokenizer": "gpt2", "template": "alpaca", "base_model": "gpt2-medium",
            "base_sha256": "ab" * 32}
    save_finetuned(model, config, tmp_path / "ft", meta)
    assert sorted(os.listdir(tmp_path / "ft")) == ["model.json", "model.safetensors"]  # no temp

    stored = load_file(str(tmp_path / "ft/model.safetensors"))
    assert ("out_head.weight" in stored) == (not tied)  # a tied head is stored once
    info = json.loads((tmp_path / "ft/model.json").read_text())
    sha256 = hashlib.sha256((tmp_path / "ft/model.safetensors").read_bytes()).hexdigest()
    assert info == {"format": "evalpipe-gpt", "config": config.to_dict(),
                    "weights_sha256": sha256, **meta}

    loaded = load_finetuned(tmp_path / "ft")
    assert loaded.config == config and loaded.sha256 == sha256
    assert (loaded.model.out_head.weight is loaded.model.tok_emb.weight) == tied
    assert same_logits_exactly(loaded.model, model)
    # A fine-tuned folder also serves as a base model.
    assert same_logits_exactly(load_base_model(str(tmp_path / "ft")).model, model)


def test_a_failed_save_leaves_the_previous_files_intact(tmp_path, monkeypatch):
    import safetensors.torch

    config = GPTConfig(**{**BOOK_SHAPE.to_dict(), "tie_weights": True})
    save_finetuned(book_model(config), config, tmp_path, {"note": "first"})
    before = (tmp_path / "model.safetensors").read_bytes()

    def half_written(tensors, filename, metadata=None):
        with open(filename, "wb") as handle:
            handle.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", half_written)
    with pytest.raises(OSError, match="disk full"):
        save_finetuned(book_model(config, seed=1), config, tmp_path, {"note": "second"})
    assert (tmp_path / "model.safetensors").read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["model.json", "model.safetensors"]
    assert load_finetuned(tmp_path).sha256 == hashlib.sha256(before).hexdigest()


def test_load_finetuned_refuses_mismatched_or_missing_files(tmp_path):
    config = GPTConfig(**{**BOOK_SHAPE.to_dict(), "tie_weights": True})
    save_finetuned(book_model(config), config, tmp_path / "a", {})
    save_finetuned(book_model(config, seed=1), config, tmp_path / "b", {})
    (tmp_path / "b/model.safetensors").replace(tmp_path / "a/model.safetensors")
    with pytest.raises(WeightsError, match=r"a/model\.safetensors is not the file "
                                           r".*a/model\.json was written with"):
        load_finetuned(tmp_path / "a")
    with pytest.raises(WeightsError, match=r"^fine-tuned model: .*b/model\.safetensors not found$"):
        load_finetuned(tmp_path / "b")
    with pytest.raises(ValueError, match="meta may not set config"):
        save_finetuned(book_model(config), config, tmp_path / "c", {"config": {}})


def test_local_files_are_what_loading_reads(tmp_path):
    from evalpipe.gpt2.weights import local_files

    assert local_files("gpt2-medium") == [] and local_files("hf:me/my-gpt") == []
    assert local_files(str(tmp_path / "nowhere.pth")) == []
    pth = tmp_path / "book" / "model.pth"
    pth.parent.mkdir()
    torch.save(book_model().state_dict(), pth)
    assert local_files(str(pth)) == [pth]
    (pth.parent / "model.json").write_text(json.dumps(BOOK_SHAPE.to_dict()))
    assert local_files(str(pth)) == [pth, pth.parent / "model.json"]

    hub = tmp_path / "hub"
    hub.mkdir()
    (hub / "pytorch_model.bin").write_bytes(b"")
    (hub / "config.json").write_text("{}")
    assert local_files(str(hub)) == [hub / "pytorch_model.bin", hub / "config.json"]

    save_finetuned(book_model(), BOOK_SHAPE, tmp_path / "tuned", {})
    assert local_files(str(tmp_path / "tuned")) == [tmp_path / "tuned/model.safetensors",
                                                    tmp_path / "tuned/model.json"]
