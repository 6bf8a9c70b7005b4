#!/usr/bin/env python3
"""Writes tiny, real GGUF language models for the LLM tests (PyPI `gguf` + numpy).

Each model is a llama-architecture transformer llama.cpp loads and runs like any other. Its
weights are built so that, at temperature 0, it answers every prompt with one fixed sentence
("Hello from tiny model alpha!"), then ends: the token embeddings are one-hot, the attention
and feed-forward weights are small seeded noise (so the residual stream keeps the current
token), and the output matrix maps each token of the sentence to the next one, every other
token to the sentence's first word, and the last word to end-of-sequence. That makes answers
checkable in tests while every layer still runs for real.

    make_tiny_gguf.py OUT_DIR            # alpha.gguf, beta.gguf, gamma.gguf (seeds 1, 2, 3)
    make_tiny_gguf.py OUT_DIR --corrupt  # also broken.gguf: a valid header, truncated tensors
"""

import argparse
import os
import sys

import numpy as np

import gguf

MODELS = {"alpha": 1, "beta": 2, "gamma": 3}
N_EMBD = 384          # one-hot embeddings: at least the vocabulary size
N_LAYER = 2
N_HEAD = 6
N_HEAD_KV = 2
N_FF = 256
CONTEXT = 2048

SPECIAL = ["<unk>", "<s>", "</s>"]
UNK, BOS, EOS = 0, 1, 2
# SentencePiece marks a leading space with U+2581.
SP = "\u2581"
COMMON = ["Hello", "!", "."] + [SP + w for w in (
    "from", "tiny", "model", "the", "a", "is", "you", "I", "to", "and", "what", "hi", "say",
    "tell", "me", "about", "yourself", "please", "name", "hello", "world")]


def sentence(name):
    return ["Hello", SP + "from", SP + "tiny", SP + "model", SP + name, "!"]


def vocabulary(name):
    tokens = list(SPECIAL)
    types = [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL]
    # Byte tokens: any text tokenizes, whatever characters it holds.
    for b in range(256):
        tokens.append(f"<0x{b:02X}>")
        types.append(gguf.TokenType.BYTE)
    words = COMMON + [SP + n for n in MODELS] + [c for c in "abcdefghijklmnopqrstuvwxyz"]
    for w in words:
        if w not in tokens:
            tokens.append(w)
            types.append(gguf.TokenType.NORMAL)
    assert SP + name in tokens
    assert len(tokens) <= N_EMBD, len(tokens)
    # Longer pieces score higher, so the tokenizer prefers whole words.
    scores = [0.0 if t in SPECIAL or t.startswith("<0x") else float(len(t)) for t in tokens]
    return tokens, scores, types


def write(path, name, seed, corrupt=False):
    rng = np.random.default_rng(seed)
    tokens, scores, types = vocabulary(name)
    n_vocab = len(tokens)
    index = {t: i for i, t in enumerate(tokens)}
    chain = [index[t] for t in sentence(name)]

    embd = np.zeros((n_vocab, N_EMBD), dtype=np.float32)
    embd[np.arange(n_vocab), np.arange(n_vocab)] = 1.0
    out = np.zeros((n_vocab, N_EMBD), dtype=np.float32)
    nxt = {a: b for a, b in zip(chain, chain[1:])}
    nxt[chain[-1]] = EOS
    for i in range(n_vocab):
        out[nxt.get(i, chain[0]), i] = 1.0

    def noise(*shape):
        return (rng.standard_normal(shape) * 0.002).astype(np.float32)

    head_dim = N_EMBD // N_HEAD
    w = gguf.GGUFWriter(path, "llama")
    w.add_name(f"tiny-{name}")
    w.add_context_length(CONTEXT)
    w.add_embedding_length(N_EMBD)
    w.add_block_count(N_LAYER)
    w.add_feed_forward_length(N_FF)
    w.add_head_count(N_HEAD)
    w.add_head_count_kv(N_HEAD_KV)
    w.add_rope_dimension_count(head_dim)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(BOS)
    w.add_eos_token_id(EOS)
    w.add_unk_token_id(UNK)
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)
    w.add_chat_template(
        "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}assistant:{% endif %}")

    w.add_tensor("token_embd.weight", embd)
    w.add_tensor("output_norm.weight", np.ones(N_EMBD, dtype=np.float32))
    w.add_tensor("output.weight", out)
    for layer in range(N_LAYER):
        p = f"blk.{layer}."
        w.add_tensor(p + "attn_norm.weight", np.ones(N_EMBD, dtype=np.float32))
        w.add_tensor(p + "attn_q.weight", noise(N_EMBD, N_EMBD))
        w.add_tensor(p + "attn_k.weight", noise(N_HEAD_KV * head_dim, N_EMBD))
        w.add_tensor(p + "attn_v.weight", noise(N_HEAD_KV * head_dim, N_EMBD))
        w.add_tensor(p + "attn_output.weight", noise(N_EMBD, N_EMBD))
        w.add_tensor(p + "ffn_norm.weight", np.ones(N_EMBD, dtype=np.float32))
        w.add_tensor(p + "ffn_gate.weight", noise(N_FF, N_EMBD))
        w.add_tensor(p + "ffn_up.weight", noise(N_FF, N_EMBD))
        w.add_tensor(p + "ffn_down.weight", noise(N_EMBD, N_FF))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    if corrupt:
        # The header promises tensors the file no longer holds.
        size = os.path.getsize(path)
        with open(path, "r+b") as f:
            f.truncate(size // 2)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir")
    ap.add_argument("--corrupt", action="store_true", help="also write broken.gguf")
    args = ap.parse_args()
    os.makedirs(args.out_dir, exist_ok=True)
    for name, seed in MODELS.items():
        path = os.path.join(args.out_dir, f"{name}.gguf")
        write(path, name, seed)
        print(f"{path}: {os.path.getsize(path)} bytes, answers {' '.join(sentence(name))!r}")
    if args.corrupt:
        path = os.path.join(args.out_dir, "broken.gguf")
        write(path, "alpha", 9, corrupt=True)
        print(f"{path}: truncated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
