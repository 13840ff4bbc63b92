"""Generate a tiny llama-architecture GGUF model: seeded random weights, a self-made tokenizer.

    python tests/realmodel/make_model.py -o v1.gguf --seed 1
    python tests/realmodel/make_model.py -o v2.gguf --seed 2 --bias reject=8

The file is a real model that llama.cpp loads and runs: 2 blocks, hidden size 64, 4 heads,
FFN 128, F32, about 0.6 MB. It knows nothing; it exists so that integration tests exercise a
real OpenAI-compatible server (grammar-constrained JSON, tool calls, seeds, model versions,
process death) without downloading anything.

PIN: this generator, ``xllamacpp==2026.10.11549`` and ``gguf==0.19.0`` are pinned together
with the tests in this folder. The same seed gives a byte-identical file, but any edit here or
any other version of either package changes what the model writes, and the tests that compare
outputs assume the model this exact code builds.

Recipe (the same as ``shared/realmodel`` documents, written again for this project):

- Tokenizer: SentencePiece-style (``llama``) with byte fallback: control tokens, the 256
  ``<0xNN>`` bytes, printable ASCII except ``<``, a few whole words plus every prefix of
  them (SPM merges pairwise, so a word is reachable only through its prefixes), and the two
  tool-call tags as single tokens.
- Chat template: ChatML with Hermes-style ``<tool_call>`` blocks, which llama.cpp recognises
  and turns into parsed ``tool_calls``.
- Three hidden channels that no layer reads or writes act as hand-wired logit offsets:
  channel 0 is a constant per-token preference (``--bias``, the tool-call bias, and penalties
  on whitespace and raw bytes so constrained JSON stays compact and text stays UTF-8);
  channel 1 makes ``</tool_call>`` end the turn; channel 2 makes ``}`` close the tool call.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import gguf
import numpy as np

N_EMBD, N_LAYER, N_HEAD, N_FF, N_CTX = 64, 2, 4, 128, 4096
SPACE = "\u2581"  # SentencePiece's visible space
WORDS = (
    "approve", "review", "reject", "decision", "score", "reason", "customer",
    "true", "false", "null", "the", "and", "is", "to", "of", "a",
)
TOOL_OPEN, TOOL_CLOSE = "<tool_call>\n", "</tool_call>"
NORMAL, UNKNOWN, CONTROL, BYTE = 1, 2, 3, 6  # tokenizer.ggml.token_type values

CHAT_TEMPLATE = """\
{%- if tools -%}
{{- '<|im_start|>system\\n' -}}
{%- if messages[0].role == 'system' -%}{{- messages[0].content + '\\n\\n' -}}{%- endif -%}
{{- '# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\n' -}}
{{- 'You are provided with function signatures within <tools></tools> XML tags:\\n<tools>' -}}
{%- for tool in tools -%}{{- '\\n' + (tool | tojson) -}}{%- endfor -%}
{{- '\\n</tools>\\n\\nFor each function call, return a json object with function name and ' -}}
{{- 'arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n' -}}
{{- '{"name": <function-name>, "arguments": <args-json-object>}\\n</tool_call><|im_end|>\\n' -}}
{%- elif messages[0].role == 'system' -%}
{{- '<|im_start|>system\\n' + messages[0].content + '<|im_end|>\\n' -}}
{%- endif -%}
{%- for message in messages -%}
{%- if message.role == 'system' and loop.first -%}
{%- elif message.role == 'assistant' and message.tool_calls -%}
{{- '<|im_start|>assistant' -}}
{%- if message.content -%}{{- '\\n' + message.content -}}{%- endif -%}
{%- for tc in message.tool_calls -%}
{%- if tc.function is defined -%}{%- set tc = tc.function -%}{%- endif -%}
{{- '\\n<tool_call>\\n{"name": "' + tc.name + '", "arguments": ' -}}
{%- if tc.arguments is string -%}{{- tc.arguments -}}
{%- else -%}{{- tc.arguments | tojson -}}{%- endif -%}
{{- '}\\n</tool_call>' -}}
{%- endfor -%}
{{- '<|im_end|>\\n' -}}
{%- elif message.role == 'tool' -%}
{{- '<|im_start|>user\\n<tool_response>\\n' + message.content -}}
{{- '\\n</tool_response><|im_end|>\\n' -}}
{%- else -%}
{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' -}}
{%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}
"""


def build_vocab() -> tuple[list[str], list[float], list[int]]:
    """Tokens, SPM scores (higher merges first) and token types, in id order."""
    tokens: list[str] = []
    scores: list[float] = []
    types: list[int] = []
    seen: set[str] = set()

    def add(piece: str, score: float, kind: int) -> None:
        if piece not in seen:
            seen.add(piece)
            tokens.append(piece)
            scores.append(score)
            types.append(kind)

    for piece in ("<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"):
        add(piece, 0.0, UNKNOWN if piece == "<unk>" else CONTROL)
    for b in range(256):
        add(f"<0x{b:02X}>", 0.0, BYTE)
    # "<" is left out so that the closing tag is always the single "</tool_call>" token.
    for i, ch in enumerate([SPACE, *(chr(c) for c in range(33, 127) if chr(c) != "<")]):
        add(ch, -1.0 - 0.001 * i, NORMAL)
    forms = [form for w in WORDS for form in (w, SPACE + w, f'"{w}"')]
    for i, form in enumerate(forms):
        add(form, -0.001 * i, NORMAL)
    add(TOOL_OPEN, 0.0, NORMAL)
    add(TOOL_CLOSE, 0.0, NORMAL)
    for form in [*forms, *(f'"{w}' for w in WORDS)]:
        for k in range(2, len(form)):
            add(form[:k], -0.5 - 0.001 * len(tokens), NORMAL)
    return tokens, scores, types


def parse_bias(specs: Sequence[str]) -> dict[str, float]:
    out: dict[str, float] = {}
    for spec in specs:
        word, sep, value = spec.partition("=")
        if not sep or word not in WORDS:
            raise SystemExit(f"--bias wants WORD=VALUE with WORD one of {', '.join(WORDS)}")
        out[word] = float(value)
    return out


def build_model(
    path: str, *, seed: int, bias: dict[str, float] | None = None, tool_call_bias: float = 6.0
) -> None:
    """Write the model for ``seed`` (and optional word biases) to ``path``."""
    tokens, scores, types = build_vocab()
    ids = {t: i for i, t in enumerate(tokens)}
    rng = np.random.default_rng(seed)

    def mat(rows: int, cols: int, gain: float = 1.0) -> np.ndarray:
        # numpy shape is (out, in); gguf reverses it. Variance-preserving init.
        return (rng.standard_normal((rows, cols)) * gain / np.sqrt(cols)).astype(np.float32)

    emb = rng.standard_normal((len(tokens), N_EMBD)).astype(np.float32)
    out = mat(len(tokens), N_EMBD, gain=3.0)  # gain 3: a fairly peaked output distribution
    emb[:, :3] = 0.0
    out[:, :3] = 0.0
    # Channel 0: every embedding carries a constant 4, so out[t, 0] is a logit offset for t.
    emb[:, 0] = 4.0
    for b in range(256):
        if b not in (0x09, 0x0A, 0x0D, 0x20):
            out[ids[f"<0x{b:02X}>"], 0] = -50.0  # raw bytes could make invalid UTF-8
    for piece in (SPACE, "<0x20>", "<0x0A>", "<0x09>", "<0x0D>"):
        out[ids[piece], 0] = -3.0  # grammars allow runs of whitespace; keep JSON compact
    out[ids[TOOL_OPEN], 0] = tool_call_bias  # answer every tools=[...] request with a call
    for word, value in (bias or {}).items():
        for form in (word, SPACE + word, f'"{word}"'):
            out[ids[form], 0] = value
    # Channel 1: "</tool_call>" -> end of turn. Channel 2: "}" -> "</tool_call>".
    emb[ids[TOOL_CLOSE], 1] = 8.0
    out[ids["<|im_end|>"], 1] = 10.0
    emb[ids["}"], 2] = 8.0
    out[ids[TOOL_CLOSE], 2] = 10.0

    w = gguf.GGUFWriter(path, "llama")
    w.add_name(f"threshold-tiny-seed{seed}")
    w.add_context_length(N_CTX)
    w.add_embedding_length(N_EMBD)
    w.add_block_count(N_LAYER)
    w.add_feed_forward_length(N_FF)
    w.add_head_count(N_HEAD)
    w.add_head_count_kv(N_HEAD)
    w.add_rope_dimension_count(N_EMBD // N_HEAD)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(len(tokens))
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_unk_token_id(0)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_eot_token_id(4)
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)
    w.add_add_space_prefix(False)
    w.add_chat_template(CHAT_TEMPLATE)

    ones = np.ones(N_EMBD, dtype=np.float32)
    w.add_tensor("token_embd.weight", emb)
    w.add_tensor("output_norm.weight", ones)
    w.add_tensor("output.weight", out)
    for layer in range(N_LAYER):
        q, k, v, o = (mat(N_EMBD, N_EMBD) for _ in range(4))
        gate, up, down = mat(N_FF, N_EMBD), mat(N_FF, N_EMBD), mat(N_EMBD, N_FF)
        for m in (q, k, v, gate, up):
            m[:, :3] = 0.0  # no layer reads channels 0-2 ...
        o[:3, :] = 0.0
        down[:3, :] = 0.0  # ... and none writes them
        p = f"blk.{layer}."
        for name, tensor in (
            ("attn_norm", ones), ("attn_q", q), ("attn_k", k), ("attn_v", v),
            ("attn_output", o), ("ffn_norm", ones), ("ffn_gate", gate), ("ffn_up", up),
            ("ffn_down", down),
        ):
            w.add_tensor(p + name + ".weight", tensor)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-o", "--output", required=True)
    ap.add_argument("--seed", type=int, default=1, help="weight seed: one seed, one model")
    ap.add_argument("--bias", action="append", default=[], metavar="WORD=V",
                    help="add V to the logit of WORD (repeatable)")
    args = ap.parse_args(argv)
    build_model(args.output, seed=args.seed, bias=parse_bias(args.bias))
    print(f"wrote {args.output} (seed {args.seed}, bias {args.bias or '-'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
