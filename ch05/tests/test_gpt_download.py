"""Loading GPT-2 weights from OpenAI's TensorFlow checkpoint and from Hugging Face's safetensors file.

The real weights cannot be downloaded here, so every test builds its own mirror of synthetic checkpoints in the
exact published formats (synthetic_gpt2.py; OpenAI's format written by TensorFlow itself, in a child process) and
downloads from it with the network switched off. The references for correctness are TensorFlow's own writer (for
the course's TensorFlow-free reader) and Hugging Face's GPT2LMHeadModel holding the same weights.
"""

import json
import os
import re
import subprocess
import sys
import textwrap
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from transformers import GPT2Config, GPT2LMHeadModel

import synthetic_gpt2
from download import TIKTOKEN_GPT2_FILES, DownloadError, mirror_path, sha256_of
from gpt_download import (
    GPT2_REPOS,
    HF_SHA256,
    MODELS_DIR_ENV,
    STAND_IN_KEY,
    CorruptCheckpointError,
    default_models_dir,
    download_gpt2,
    gpt2_urls,
    load_gpt2,
)
from tf_checkpoint import read_index

SIZES = list(GPT2_REPOS)
HERE = Path(__file__).resolve().parents[1]
needs_tensorflow = pytest.mark.skipif(not synthetic_gpt2.TENSORFLOW_AVAILABLE, reason=synthetic_gpt2.NO_TENSORFLOW)


@pytest.fixture(scope="module")
def mirror(tmp_path_factory):
    return synthetic_gpt2.build_mirror(tmp_path_factory.mktemp("mirror"))


@pytest.fixture(autouse=True)
def offline(monkeypatch, mirror):
    """Files may come from this test's mirror only: other mirror roots and the network are switched off."""
    def no_network(url, *args, **kwargs):
        raise urllib.error.URLError("network switched off by the test")

    monkeypatch.setenv("LLM_COURSE_MIRROR", str(mirror))
    monkeypatch.setattr(urllib.request, "urlopen", no_network)


def rewrite_safetensors(folder, change):
    """Apply ``change`` to the tensors of ``folder/model.safetensors``, keeping its metadata."""
    path = folder / "model.safetensors"
    with safe_open(path, framework="pt") as f:
        metadata = f.metadata()
    tensors = load_file(path)
    change(tensors)
    save_file(tensors, path, metadata=metadata)


def rewrite_json(path, change):
    values = json.loads(path.read_text())
    change(values)
    path.write_text(json.dumps(values))


@needs_tensorflow
@pytest.mark.parametrize("size", SIZES)
def test_both_sources_give_the_same_model(size, tmp_path):
    from_openai = load_gpt2(size, "openai", tmp_path)
    from_hf = load_gpt2(size, "hf", tmp_path)
    cfg = from_openai.cfg
    assert (cfg.emb_dim, cfg.n_heads, cfg.n_layers) == synthetic_gpt2.SYNTHETIC_DIMS[size]
    assert (cfg.vocab_size, cfg.context_length) == (50257, 1024)
    assert from_hf.cfg == cfg
    assert not from_openai.training and not from_hf.training
    assert from_openai.out_head.weight is from_openai.tok_emb.weight  # GPT-2 ties the output head to wte
    hf_params = dict(from_hf.named_parameters())
    for name, value in from_openai.named_parameters():
        assert torch.equal(value, hf_params[name]), name


@needs_tensorflow
@pytest.mark.parametrize("size", SIZES)
def test_logits_match_transformers(size, tmp_path):
    """Both loaders agree with HF's GPT2LMHeadModel holding the same weights.

    The comparison runs in float64, so any difference above 1e-5 is a loading error, not float32 rounding.
    """
    models = [load_gpt2(size, source, tmp_path).double() for source in ("openai", "hf")]
    hparams = json.loads((tmp_path / size / "hparams.json").read_text())
    reference = GPT2LMHeadModel(GPT2Config(
        vocab_size=hparams["n_vocab"], n_positions=hparams["n_ctx"], n_embd=hparams["n_embd"],
        n_head=hparams["n_head"], n_layer=hparams["n_layer"]))
    # The file's causal-mask buffers h.N.attn.bias are not parameters of transformers' GPT-2.
    weights = {name: value for name, value in load_file(tmp_path / size / "model.safetensors").items()
               if not name.endswith(".attn.bias")}
    reference.transformer.load_state_dict(weights, strict=True)
    reference.double().eval()
    token_ids = torch.randint(0, 50257, (2, 64), generator=torch.Generator().manual_seed(123))
    with torch.no_grad():
        expected = reference(token_ids).logits  # (batch, tokens, vocab_size)
        for model in models:
            assert (model(token_ids) - expected).abs().max() <= 1e-5


@pytest.mark.parametrize("source", ["hf", pytest.param("openai", marks=needs_tensorflow)])
def test_stand_in_weights_are_announced_with_the_fix(source, tmp_path, capsys):
    load_gpt2("124M", source, tmp_path)
    out = capsys.readouterr().out
    assert "stand-in" in out and f"delete {tmp_path / '124M'}" in out and MODELS_DIR_ENV in out


@needs_tensorflow
def test_openai_checkpoint_without_marker_is_not_announced(tmp_path, capsys):
    folder = download_gpt2("124M", "openai", tmp_path)
    rewrite_json(folder / "hparams.json", lambda hparams: hparams.pop(STAND_IN_KEY))
    load_gpt2("124M", "openai", tmp_path)
    assert "stand-in" not in capsys.readouterr().out


def test_hf_checkpoint_is_announced_by_either_marker(tmp_path, capsys):
    """(355M: no published digest is recorded for it, so the unmarked file loads.)"""
    folder = download_gpt2("355M", "hf", tmp_path)
    rewrite_json(folder / "config.json", lambda config: config.pop(STAND_IN_KEY))
    load_gpt2("355M", "hf", tmp_path)
    assert "stand-in" in capsys.readouterr().out  # the safetensors metadata still says so
    tensors = load_file(folder / "model.safetensors")
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    load_gpt2("355M", "hf", tmp_path)
    assert "stand-in" not in capsys.readouterr().out


@needs_tensorflow
def test_hparams_with_more_blocks_than_the_checkpoint(tmp_path):
    folder = download_gpt2("124M", "openai", tmp_path)
    rewrite_json(folder / "hparams.json", lambda hparams: hparams.update(n_layer=3))
    with pytest.raises(ValueError, match=r"hparams\.json.*2 blocks, the model has 3"):
        load_gpt2("124M", "openai", tmp_path)


@needs_tensorflow
def test_hparams_missing_an_entry(tmp_path):
    folder = download_gpt2("124M", "openai", tmp_path)
    rewrite_json(folder / "hparams.json", lambda hparams: hparams.pop("n_head"))
    with pytest.raises(ValueError, match=r"hparams\.json lacks the entries \['n_head'\]"):
        load_gpt2("124M", "openai", tmp_path)


def test_safetensors_missing_a_tensor(tmp_path):
    folder = download_gpt2("124M", "hf", tmp_path)
    rewrite_safetensors(folder, lambda tensors: tensors.pop("h.1.mlp.c_fc.bias"))
    with pytest.raises(ValueError, match=r"config\.json.*'h\.1\.mlp\.c_fc\.bias' is missing"):
        load_gpt2("124M", "hf", tmp_path)


def test_safetensors_tensor_of_wrong_shape(tmp_path):
    folder = download_gpt2("124M", "hf", tmp_path)
    rewrite_safetensors(folder, lambda tensors: tensors.update({"h.0.attn.c_proj.weight": torch.zeros(32, 33)}))
    with pytest.raises(ValueError, match=r"'h\.0\.attn\.c_proj\.weight' has shape \(32, 33\).*expects \(32, 32\)"):
        load_gpt2("124M", "hf", tmp_path)


@needs_tensorflow
def test_openai_tensor_of_wrong_shape(tmp_path):
    hparams = synthetic_gpt2.synthetic_hparams("124M")
    params = synthetic_gpt2.random_params(hparams)
    params["h.1.mlp.c_fc.weight"] = params["h.1.mlp.c_fc.weight"][:, :100]
    synthetic_gpt2.write_openai_checkpoints([(tmp_path / "124M", hparams, params)])
    with pytest.raises(ValueError, match=r"model/h0/attn/c_attn/w.*'h\.1\.mlp\.c_fc\.weight' has shape "
                                         r"\(32, 100\).*expects \(32, 128\)"):
        load_gpt2("124M", "openai", tmp_path)


@needs_tensorflow
def test_openai_conv1d_weight_without_leading_1(tmp_path):
    hparams = synthetic_gpt2.synthetic_hparams("124M")
    params = synthetic_gpt2.random_params(hparams)
    params["h.0.attn.c_attn.weight"] = params["h.0.attn.c_attn.weight"].reshape(2, 16, 96)
    synthetic_gpt2.write_openai_checkpoints([(tmp_path / "124M", hparams, params)])
    with pytest.raises(ValueError, match=r"'model/h0/attn/c_attn/w' has shape \(1, 2, 16, 96\), expected \(1, in"):
        load_gpt2("124M", "openai", tmp_path)


@pytest.mark.parametrize("size, source, valid", [("125M", "openai", "124M, 355M, 774M, 1558M"),
                                                 ("124M", "tf", "hf, openai")])
def test_bad_size_or_source(size, source, valid, tmp_path):
    with pytest.raises(ValueError, match=valid):
        load_gpt2(size, source, tmp_path)
    with pytest.raises(ValueError, match=valid):
        download_gpt2(size, source, tmp_path)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("source", ["hf", pytest.param("openai", marks=needs_tensorflow)])
def test_files_come_from_the_mirror(source, mirror, tmp_path, monkeypatch):
    folder = download_gpt2("355M", source, tmp_path)
    urls = gpt2_urls("355M", source)
    assert sorted(p.name for p in folder.iterdir()) == sorted(urls)
    for file, url in urls.items():
        assert (folder / file).read_bytes() == mirror_path(mirror, url).read_bytes()
    monkeypatch.setenv("LLM_COURSE_MIRROR", str(tmp_path / "empty-mirror"))
    with pytest.raises(DownloadError, match=re.escape(urls["config.json" if source == "hf" else "checkpoint"])):
        download_gpt2("355M", source, tmp_path / "elsewhere")


@needs_tensorflow
def test_synthetic_openai_checkpoint_has_the_published_layout(mirror):
    """Seven files; a relative `checkpoint`; variables named and shaped as in OpenAI's GPT-2 checkpoints."""
    urls = gpt2_urls("774M", "openai")
    folder = mirror_path(mirror, urls["hparams.json"]).parent
    assert sorted(p.name for p in folder.iterdir()) == sorted(urls)
    assert 'model_checkpoint_path: "model.ckpt"' in (folder / "checkpoint").read_text()
    for url, sha256 in TIKTOKEN_GPT2_FILES.items():  # the real tokenizer files
        assert sha256_of(folder / url.rsplit("/", 1)[1]) == sha256
    d, n_layer = 64, 3
    expected = {"model/wte": [50257, d], "model/wpe": [1024, d], "model/ln_f/g": [d], "model/ln_f/b": [d]}
    for i in range(n_layer):
        for norm in ("ln_1", "ln_2"):
            expected.update({f"model/h{i}/{norm}/g": [d], f"model/h{i}/{norm}/b": [d]})
        for layer, d_in, d_out in [("attn/c_attn", d, 3 * d), ("attn/c_proj", d, d),
                                   ("mlp/c_fc", d, 4 * d), ("mlp/c_proj", 4 * d, d)]:
            expected.update({f"model/h{i}/{layer}/w": [1, d_in, d_out], f"model/h{i}/{layer}/b": [d_out]})
    records, n_shards = read_index(folder / "model.ckpt.index")
    assert n_shards == 1
    assert {name: record["shape"] for name, record in records.items()} == expected


def test_synthetic_safetensors_has_the_published_key_set(mirror):
    """No "transformer." prefix, no lm_head, plus a float32 causal-mask buffer h.N.attn.bias per block."""
    path = mirror_path(mirror, gpt2_urls("355M", "hf")["model.safetensors"])
    d, n_layer = 48, 3
    expected = {"wte.weight": (50257, d), "wpe.weight": (1024, d), "ln_f.weight": (d,), "ln_f.bias": (d,)}
    for i in range(n_layer):
        expected.update({f"h.{i}.attn.bias": (1, 1, 1024, 1024),
                         f"h.{i}.ln_1.weight": (d,), f"h.{i}.ln_1.bias": (d,),
                         f"h.{i}.ln_2.weight": (d,), f"h.{i}.ln_2.bias": (d,),
                         f"h.{i}.attn.c_attn.weight": (d, 3 * d), f"h.{i}.attn.c_attn.bias": (3 * d,),
                         f"h.{i}.attn.c_proj.weight": (d, d), f"h.{i}.attn.c_proj.bias": (d,),
                         f"h.{i}.mlp.c_fc.weight": (d, 4 * d), f"h.{i}.mlp.c_fc.bias": (4 * d,),
                         f"h.{i}.mlp.c_proj.weight": (4 * d, d), f"h.{i}.mlp.c_proj.bias": (d,)})
    tensors = load_file(path)
    assert {name: tuple(t.shape) for name, t in tensors.items()} == expected
    assert all(t.dtype == torch.float32 for t in tensors.values())
    assert torch.equal(tensors["h.0.attn.bias"][0, 0], torch.ones(1024, 1024).tril())
    with safe_open(path, framework="pt") as f:
        assert f.metadata()["format"] == "pt"


def test_build_mirror_never_overwrites(mirror):
    checkpoint = mirror_path(mirror, gpt2_urls("124M", "openai")["model.ckpt.data-00000-of-00001"])
    before = checkpoint.read_bytes()
    with pytest.raises(FileExistsError, match="refusing to overwrite"):
        synthetic_gpt2.build_mirror(mirror, ["124M"], seed=0)
    assert checkpoint.read_bytes() == before


def test_downloads_go_to_the_folder_the_environment_names(tmp_path, monkeypatch):
    monkeypatch.setenv(MODELS_DIR_ENV, str(tmp_path / "shared-weights"))
    assert default_models_dir() == tmp_path / "shared-weights"
    load_gpt2("124M")
    assert (tmp_path / "shared-weights" / "124M" / "model.safetensors").is_file()
    monkeypatch.delenv(MODELS_DIR_ENV)
    assert default_models_dir() == Path("gpt2")


def test_a_real_124m_file_must_match_the_published_digest(tmp_path, capsys):
    """Without the stand-in marker the file counts as a real download and is checked against HF's sha256."""
    folder = download_gpt2("124M", "hf", tmp_path)
    rewrite_json(folder / "config.json", lambda config: config.pop(STAND_IN_KEY))
    tensors = load_file(folder / "model.safetensors")
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(CorruptCheckpointError, match=re.escape(f"{folder / 'model.safetensors'} is not the "
                                                               f"published GPT-2 124M file") + ".*delete it"):
        load_gpt2("124M", "hf", tmp_path)
    assert HF_SHA256["124M"] in str(pytest.raises(CorruptCheckpointError, load_gpt2, "124M", "hf", tmp_path).value)
    load_gpt2("355M", "hf", tmp_path)  # no digest recorded for this size: loads
    assert "stand-in" in capsys.readouterr().out


def truncate(path, keep):
    data = path.read_bytes()
    path.write_bytes(data[:keep if keep >= 0 else len(data) + keep])


def test_truncated_safetensors_names_the_file(tmp_path):
    folder = download_gpt2("124M", "hf", tmp_path)
    truncate(folder / "model.safetensors", -1000)
    with pytest.raises(CorruptCheckpointError, match=re.escape(str(folder / "model.safetensors")) + ".*delete it"):
        load_gpt2("124M", "hf", tmp_path)


@needs_tensorflow
@pytest.mark.parametrize("file, keep, message", [
    ("model.ckpt.data-00000-of-00001", -100, r"model\.ckpt\.data-00000-of-00001 is truncated or missing: tensor "
                                             r"'model/\w+'.*Delete it and download it again"),
    ("model.ckpt.index", -10, r"model\.ckpt\.index is not a readable TensorFlow checkpoint index.*delete it"),
    ("model.ckpt.index", 30, r"model\.ckpt\.index is not a readable TensorFlow checkpoint index"),
])
def test_truncated_openai_checkpoint_names_the_file(file, keep, message, tmp_path):
    folder = download_gpt2("124M", "openai", tmp_path)
    truncate(folder / file, keep)
    with pytest.raises(CorruptCheckpointError, match=message):
        load_gpt2("124M", "openai", tmp_path)


@needs_tensorflow
def test_tensorflow_never_shares_a_process_with_training(tmp_path):
    """Regression: TensorFlow imported before triton / torch._dynamo crashed the process (SIGSEGV) on Linux.

    In a fresh process: load OpenAI's format, take an AdamW step, import transformers and torch._dynamo.
    """
    script = textwrap.dedent(f"""
        import sys
        import torch
        from gpt_download import load_gpt2
        model = load_gpt2("124M", "openai", {str(tmp_path)!r}).train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        model(torch.tensor([[1, 2, 3]])).sum().backward()
        optimizer.step()
        import torch._dynamo
        import transformers
        assert "tensorflow" not in sys.modules, "TensorFlow was imported"
        print("clean exit")
    """)
    result = subprocess.run([sys.executable, "-c", script], cwd=HERE, capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(HERE)}, timeout=600)
    assert result.returncode == 0, f"exit code {result.returncode}:\n{result.stderr[-3000:]}"
    assert "clean exit" in result.stdout
