"""Tokenizer: a Hugging Face `tokenizers` wrapper with the checkpoint's special tokens and chat template.

Special token ids are resolved from the files next to the checkpoint:

- BOS and PAD: tokenizer_config.json / special_tokens_map.json (the token strings the tokenizer adds), then
  generation_config.json, then config.json.
- EOS: the union of generation_config.json's `eos_token_id` (an int or a list), else config.json's, and the
  tokenizer files' `eos_token`. Generation stops on any of them (transformers stops on the first group; a
  tokenizer's own end-of-text token is also always a stop).

Whether `encode` adds BOS/EOS follows transformers: explicit `add_bos_token` / `add_eos_token` in
tokenizer_config.json (or a tokenizer.json without a post-processor) decide; otherwise tokenizer.json's own
post-processor does. `clean_up_tokenization_spaces` is ignored (transformers ignores it for BPE too: it
corrupts text).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any, Iterable, Sequence

from tokenizers import Tokenizer as _HFTokenizer

from xlstm_mlx.generation.chat_template import render_chat_template
from xlstm_mlx.generation.detokenizer import StreamingDetokenizer
from xlstm_mlx.errors import MissingFileError, UsageError

_SPECIAL_NAMES = ("bos_token", "eos_token", "pad_token", "unk_token")


def _read_json(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise UsageError(f"{path} is not valid JSON: {e}") from e
    if not isinstance(data, dict):
        raise UsageError(f"{path} must hold a JSON object, found {type(data).__name__}")
    return data


def _token_content(value: Any) -> str | None:
    """A special token as tokenizer_config.json writes it: a string or an AddedToken dict."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return value["content"]
    raise UsageError(f"cannot read special token {value!r}: expected a string or a dict with 'content'")


def _id_list(value: Any, source: str) -> list[int]:
    if value is None:
        return []
    values = value if isinstance(value, list) else [value]
    for v in values:
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise UsageError(f"{source}: token ids must be non-negative integers, found {v!r}")
    return list(values)


def _byte_fallback_ids(tok: _HFTokenizer) -> list[int]:
    """Ids of the <0x00>..<0xFF> tokens when the model decodes them by byte fallback, else []."""
    flag = getattr(tok.model, "byte_fallback", None)
    if flag is None:  # not every model type exposes the flag; its serialized form always has it
        flag = json.loads(tok.to_str()).get("model", {}).get("byte_fallback", False)
    if not flag:
        return []
    ids = (tok.token_to_id(f"<0x{b:02X}>") for b in range(256))
    return [i for i in ids if i is not None]


class Tokenizer:
    """Encode/decode text, special ids, chat template, streaming detokenizer.

    Build it with `load_tokenizer(model_dir)` or directly from a `tokenizers.Tokenizer`.
    """

    def __init__(
        self,
        tokenizer: _HFTokenizer,
        *,
        bos_token_id: int | None = None,
        eos_token_ids: Iterable[int] = (),
        pad_token_id: int | None = None,
        add_bos_token: bool | None = None,
        add_eos_token: bool | None = None,
        chat_template: str | None = None,
        special_tokens: dict[str, str] | None = None,
    ):
        self._tok = tokenizer
        self.vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)
        for name, tid in (("bos_token_id", bos_token_id), ("pad_token_id", pad_token_id)):
            if tid is not None and not 0 <= tid < self.vocab_size:
                raise UsageError(f"{name}={tid} is outside the tokenizer's vocabulary (size {self.vocab_size})")
        eos = []
        for tid in eos_token_ids:
            if not 0 <= tid < self.vocab_size:
                raise UsageError(f"eos token id {tid} is outside the tokenizer's vocabulary (size {self.vocab_size})")
            if tid not in eos:
                eos.append(tid)
        self.bos_token_id = bos_token_id
        self.eos_token_ids = eos
        self.pad_token_id = pad_token_id
        self.chat_template = chat_template
        self.special_tokens = dict(special_tokens or {})
        # None = leave it to tokenizer.json's post-processor (the transformers rule, see module docstring)
        explicit = add_bos_token is not None or add_eos_token is not None
        self._manual_specials = explicit or tokenizer.post_processor is None
        self.add_bos_token = bool(add_bos_token) and bos_token_id is not None
        self.add_eos_token = bool(add_eos_token) and bool(eos)
        self._byte_ids = _byte_fallback_ids(tokenizer)

    # ------------------------------------------------------------------ ids
    @property
    def eos_token_id(self) -> int | None:
        """The first EOS id (the one written at the end of a sequence), or None."""
        return self.eos_token_ids[0] if self.eos_token_ids else None

    def token_to_id(self, token: str) -> int | None:
        return self._tok.token_to_id(token)

    def id_to_token(self, token_id: int) -> str | None:
        return self._tok.id_to_token(token_id)

    # ------------------------------------------------------------------ text
    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        if not isinstance(text, str):
            raise TypeError(f"encode expects a str, got {type(text).__name__}")
        if not add_special_tokens:
            return self._tok.encode(text, add_special_tokens=False).ids
        if not self._manual_specials:
            return self._tok.encode(text, add_special_tokens=True).ids
        ids = self._tok.encode(text, add_special_tokens=False).ids
        if self.add_bos_token:
            ids = [self.bos_token_id] + ids
        if self.add_eos_token:
            ids = ids + [self.eos_token_ids[0]]
        return ids

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def detokenizer(self, skip_special_tokens: bool = True) -> StreamingDetokenizer:
        """A fresh streaming detokenizer: `add_token(id) -> str` emits only complete text."""
        return StreamingDetokenizer(self.decode, skip_special_tokens=skip_special_tokens, hold_ids=self._byte_ids)

    # ------------------------------------------------------------------ chat
    def apply_chat_template(
        self,
        messages: list[dict],
        add_generation_prompt: bool = True,
        tokenize: bool = False,
        **kwargs,
    ) -> str | list[int]:
        """Render `messages` with the checkpoint's chat template (as transformers does).

        Returns the text, or its ids (encoded without adding special tokens: the template writes them) when
        `tokenize=True`. Raises ValueError when the checkpoint has no chat template.
        """
        if self.chat_template is None:
            raise UsageError(
                "this tokenizer has no chat template (tokenizer_config.json has no 'chat_template' and there is "
                "no chat_template.jinja); format the prompt yourself"
            )
        context = {**self.special_tokens, **kwargs}
        text = render_chat_template(self.chat_template, messages, add_generation_prompt, **context)
        return self.encode(text, add_special_tokens=False) if tokenize else text

    def __repr__(self) -> str:
        return (
            f"Tokenizer(vocab_size={self.vocab_size}, bos={self.bos_token_id}, eos={self.eos_token_ids}, "
            f"pad={self.pad_token_id}, chat_template={'yes' if self.chat_template else 'no'})"
        )


def _select_chat_template(value: Any, source: Path) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, list):  # [{"name": ..., "template": ...}, ...]: transformers uses "default"
        named = {t.get("name"): t.get("template") for t in value if isinstance(t, dict)}
        if "default" in named:
            return named["default"]
        raise UsageError(f"{source}: chat_template lists {sorted(map(str, named))} but none named 'default'")
    raise UsageError(f"{source}: chat_template must be a string or a list of named templates")


def load_tokenizer(model_dir: str | Path) -> Tokenizer | None:
    """The tokenizer stored with a checkpoint, or None when the directory has no tokenizer.json."""
    d = Path(model_dir)
    if not d.is_dir():
        raise MissingFileError(f"model directory {d} does not exist")
    path = d / "tokenizer.json"
    if not path.is_file():
        return None
    hf = _HFTokenizer.from_file(str(path))
    tok_cfg = _read_json(d / "tokenizer_config.json")
    smap = _read_json(d / "special_tokens_map.json")
    gen_cfg = _read_json(d / "generation_config.json")
    cfg = _read_json(d / "config.json")

    strings: dict[str, str] = {}
    for name in _SPECIAL_NAMES:
        s = _token_content(tok_cfg.get(name)) or _token_content(smap.get(name))
        if s is not None:
            strings[name] = s

    def string_id(name: str) -> int | None:
        s = strings.get(name)
        if s is None:
            return None
        tid = hf.token_to_id(s)
        if tid is None:
            warnings.warn(f"{d}: {name} {s!r} is not in tokenizer.json's vocabulary; ignoring it", stacklevel=3)
        return tid

    def config_id(key: str) -> int | None:
        for source, data in (("generation_config.json", gen_cfg), ("config.json", cfg)):
            ids = _id_list(data.get(key), f"{d / source}: {key}")
            if ids:
                return ids[0]
        return None

    bos = string_id("bos_token")
    if bos is None:
        bos = config_id("bos_token_id")
    pad = string_id("pad_token")
    if pad is None:
        pad = config_id("pad_token_id")
    eos = _id_list(gen_cfg.get("eos_token_id"), f"{d / 'generation_config.json'}: eos_token_id")
    if not eos:
        eos = _id_list(cfg.get("eos_token_id"), f"{d / 'config.json'}: eos_token_id")
    tok_eos = string_id("eos_token")
    if tok_eos is not None and tok_eos not in eos:
        eos.append(tok_eos)

    template = _select_chat_template(tok_cfg.get("chat_template"), d / "tokenizer_config.json")
    if template is None and (d / "chat_template.jinja").is_file():
        template = (d / "chat_template.jinja").read_text(encoding="utf-8")
    if template is None and (d / "chat_template.json").is_file():
        template = _select_chat_template(
            _read_json(d / "chat_template.json").get("chat_template"), d / "chat_template.json"
        )

    return Tokenizer(
        hf,
        bos_token_id=bos,
        eos_token_ids=eos,
        pad_token_id=pad,
        add_bos_token=tok_cfg.get("add_bos_token"),
        add_eos_token=tok_cfg.get("add_eos_token"),
        chat_template=template,
        special_tokens=strings,
    )
