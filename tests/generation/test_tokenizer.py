"""Tokenizer wrapper, special ids from checkpoint files, chat templates, streaming detokenizer."""

import json
import random

import jinja2
import pytest
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, processors, trainers

from xlstm_mlx.generation.tokenizer import Tokenizer, load_tokenizer

CORPUS = [
    "The quick brown fox jumps over the lazy dog. Hello world, hello there!",
    "Recurrent models keep a constant-size state; attention models keep a cache that grows.",
    "Numbers: 12345 67890, symbols: #$%&*()[]{}<>, quotes: 'single' \"double\".",
    "Café déjà vu — naïve façade, Ünïcödé text with accents.",
    "日本語のテキストと中文文本。",
    "Emoji 😀 and flags 🇩🇪 and family 👨‍👩‍👧",
] * 20

# Characters the tokenizers never saw in training: they split into several byte tokens.
HARD_TEXTS = [
    "Hello world",
    "  leading spaces and trailing  ",
    "你好，世界！汉字很多。",
    "🦙🧪 emoji 🎉 mixed with text ✨",
    "Ünïcödé déjà vu 😀 日本語",
    "line one\nline two\n\n  indented\ttab",
    "a",
    "",
]

SPECIALS = ["<|endoftext|>", "<pad>", "<s>", "<|user|>", "<|assistant|>"]


def byte_level_bpe() -> HFTokenizer:
    tok = HFTokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(CORPUS, trainer)
    return tok


def _with_byte_fallback(tok: HFTokenizer) -> HFTokenizer:
    """Add the 256 <0xNN> tokens sentencepiece uses for unknown characters and switch byte_fallback on."""
    data = json.loads(tok.to_str())
    vocab = data["model"]["vocab"]
    for b in range(256):
        vocab.setdefault(f"<0x{b:02X}>", len(vocab))
    data["model"]["byte_fallback"] = True
    return HFTokenizer.from_str(json.dumps(data))


def sentencepiece_bpe(llama_decoder: bool) -> HFTokenizer:
    """Metaspace + BPE with byte fallback; decoder either Metaspace or the Llama Replace/ByteFallback/Fuse/Strip."""
    tok = HFTokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=SPECIALS, limit_alphabet=60)
    tok.train_from_iterator(CORPUS, trainer)
    tok = _with_byte_fallback(tok)
    if llama_decoder:
        tok.decoder = decoders.Sequence(
            [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
        )
    else:
        tok.decoder = decoders.Sequence([decoders.ByteFallback(), decoders.Metaspace("▁", "first")])
    return tok


def unigram() -> HFTokenizer:
    tok = HFTokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(vocab_size=200, special_tokens=SPECIALS, unk_token="<pad>")
    tok.train_from_iterator(CORPUS, trainer)
    return tok


TOKENIZERS = {
    "byte_level_bpe": byte_level_bpe,
    "sp_llama_decoder": lambda: sentencepiece_bpe(True),
    "sp_metaspace_decoder": lambda: sentencepiece_bpe(False),
    "unigram": unigram,
}


@pytest.fixture(scope="module", params=sorted(TOKENIZERS))
def hf_tok(request):
    return TOKENIZERS[request.param]()


def _stream(tok: Tokenizer, ids):
    detok = tok.detokenizer()
    pieces = [detok.add_token(i) for i in ids]
    pieces.append(detok.finalize())
    return pieces


@pytest.mark.parametrize("text", HARD_TEXTS)
def test_stream_concatenation_equals_full_decode(hf_tok, text):
    tok = Tokenizer(hf_tok)
    ids = tok.encode(text)
    pieces = _stream(tok, ids)
    assert "".join(pieces) == tok.decode(ids)
    for p in pieces:
        assert "\ufffd" not in p, f"emitted a broken character in {pieces!r}"


def test_multibyte_characters_are_split_across_tokens():
    """The tests above only mean something if characters really are split into byte tokens."""
    tok = Tokenizer(byte_level_bpe())
    ids = tok.encode("🦙")
    assert len(ids) > 1
    assert "\ufffd" in tok.decode(ids[:1])
    pieces = _stream(tok, ids)
    assert pieces[: len(ids) - 1] == [""] * (len(ids) - 1) and pieces[len(ids) - 1] == "🦙"

    sp = Tokenizer(sentencepiece_bpe(True))
    ids = sp.encode("你好")
    assert any(sp.id_to_token(i).startswith("<0x") for i in ids)
    assert "".join(_stream(sp, ids)) == "你好"
    pieces = _stream(sp, sp.encode("你好 world"))
    assert "你好" in "".join(pieces[:-1])  # a byte run is emitted when the next token arrives, not only at the end


def test_sentencepiece_leading_space_is_kept():
    tok = Tokenizer(sentencepiece_bpe(True))
    ids = tok.encode("Hello world hello")
    assert tok.decode(ids[-1:]) == tok.decode(ids[-1:]).lstrip()  # alone, the space is lost ...
    pieces = _stream(tok, ids)
    assert "".join(pieces) == "Hello world hello"
    assert any(p.startswith(" ") for p in pieces)  # ... streamed, it is not


def test_stream_random_token_sequences(hf_tok):
    """Random ids (broken UTF-8 included): the stream still concatenates to the full decode."""
    tok = Tokenizer(hf_tok)
    rng = random.Random(0)
    for _ in range(20):
        ids = [rng.randrange(tok.vocab_size) for _ in range(rng.randrange(1, 40))]
        assert "".join(_stream(tok, ids)) == tok.decode(ids)


def test_stream_skips_special_tokens():
    tok = Tokenizer(byte_level_bpe())
    eot = tok.token_to_id("<|endoftext|>")
    ids = tok.encode("Hello") + [eot] + tok.encode(" world")
    assert "".join(_stream(tok, ids)) == "Hello world"


def test_finalize_flushes_incomplete_character():
    tok = Tokenizer(byte_level_bpe())
    ids = tok.encode("ok 🦙")[:-1]
    detok = tok.detokenizer()
    text = "".join(detok.add_token(i) for i in ids)
    assert "\ufffd" not in text
    assert text + detok.finalize() == tok.decode(ids)


def _write_checkpoint_dir(path, hf: HFTokenizer, tok_cfg=None, config=None, gen_cfg=None, smap=None):
    path.mkdir(parents=True, exist_ok=True)
    hf.save(str(path / "tokenizer.json"))
    for name, data in (
        ("tokenizer_config.json", tok_cfg),
        ("config.json", config),
        ("generation_config.json", gen_cfg),
        ("special_tokens_map.json", smap),
    ):
        if data is not None:
            (path / name).write_text(json.dumps(data))
    return path


def test_load_returns_none_without_tokenizer_json(tmp_path):
    assert load_tokenizer(tmp_path) is None
    with pytest.raises(FileNotFoundError):
        load_tokenizer(tmp_path / "missing")


def test_special_ids_from_files(tmp_path):
    hf = byte_level_bpe()
    d = _write_checkpoint_dir(
        tmp_path / "m",
        hf,
        tok_cfg={
            "bos_token": {"content": "<s>", "lstrip": False, "__type": "AddedToken"},
            "eos_token": "<|endoftext|>",
            "add_bos_token": True,
        },
        smap={"pad_token": "<pad>"},
        config={"bos_token_id": 99, "eos_token_id": 7, "pad_token_id": 98},
        gen_cfg={"eos_token_id": [3, 4]},
    )
    tok = load_tokenizer(d)
    assert tok.bos_token_id == hf.token_to_id("<s>")
    assert tok.pad_token_id == hf.token_to_id("<pad>")
    # generation_config wins over config.json; the tokenizer's eos is added
    assert tok.eos_token_ids == [3, 4, hf.token_to_id("<|endoftext|>")]
    ids = tok.encode("Hello")
    assert ids[0] == tok.bos_token_id and ids[1:] == hf.encode("Hello").ids
    assert tok.encode("Hello", add_special_tokens=False) == hf.encode("Hello").ids


def test_special_ids_fall_back_to_config(tmp_path):
    d = _write_checkpoint_dir(tmp_path / "m", byte_level_bpe(), config={"bos_token_id": 2, "eos_token_id": 0})
    tok = load_tokenizer(d)
    assert (tok.bos_token_id, tok.eos_token_ids, tok.pad_token_id) == (2, [0], None)
    assert tok.encode("Hi") == tok.encode("Hi", add_special_tokens=False)  # post_processor None, no flag


def test_post_processor_is_used_without_explicit_flags(tmp_path):
    hf = byte_level_bpe()
    bos = hf.token_to_id("<s>")
    hf.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", bos)])
    d = _write_checkpoint_dir(tmp_path / "m", hf, tok_cfg={"bos_token": "<s>"})
    assert load_tokenizer(d).encode("Hi")[0] == bos
    d2 = _write_checkpoint_dir(tmp_path / "m2", hf, tok_cfg={"bos_token": "<s>", "add_bos_token": False})
    assert load_tokenizer(d2).encode("Hi")[0] != bos  # an explicit flag overrides the post-processor


def test_bad_files_are_refused(tmp_path):
    d = _write_checkpoint_dir(tmp_path / "m", byte_level_bpe(), config={"eos_token_id": "two"})
    with pytest.raises(ValueError, match="eos_token_id"):
        load_tokenizer(d)
    d = _write_checkpoint_dir(tmp_path / "m2", byte_level_bpe(), config={"eos_token_id": 10**6})
    with pytest.raises(ValueError, match="outside the tokenizer's vocabulary"):
        load_tokenizer(d)
    (tmp_path / "m3").mkdir()
    byte_level_bpe().save(str(tmp_path / "m3" / "tokenizer.json"))
    (tmp_path / "m3" / "tokenizer_config.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_tokenizer(tmp_path / "m3")


def test_unknown_special_token_string_warns(tmp_path):
    d = _write_checkpoint_dir(tmp_path / "m", byte_level_bpe(), tok_cfg={"eos_token": "</nope>"})
    with pytest.warns(UserWarning, match="not in tokenizer.json"):
        tok = load_tokenizer(d)
    assert tok.eos_token_ids == []


CHATML = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if message['role'] == 'system' and not loop.first %}{{ raise_exception('system must come first') }}{% endif %}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] | trim + eos_token + '\n' }}"
    "{% endfor %}"
    "{% set ns = namespace(n=0) %}{% for m in messages %}{% set ns.n = ns.n + 1 %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
    "{# turns: {{ ns.n }} #}{{ messages[-1] | tojson if false }}"
)


def _chat_dir(tmp_path, template):
    tok_cfg = {"bos_token": "<s>", "eos_token": "<|endoftext|>", "chat_template": template}
    return _write_checkpoint_dir(tmp_path / "chat", byte_level_bpe(), tok_cfg=tok_cfg)


MESSAGES = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "  Hi there ✨ "},
    {"role": "assistant", "content": "Hello!"},
    {"role": "user", "content": 'Quote "this" & <that>'},
]


@pytest.mark.parametrize("add_generation_prompt", [True, False])
def test_chat_template_matches_transformers(tmp_path, add_generation_prompt):
    transformers = pytest.importorskip("transformers")
    d = _chat_dir(tmp_path, CHATML)
    ours = load_tokenizer(d)
    theirs = transformers.PreTrainedTokenizerFast.from_pretrained(str(d))
    expected = theirs.apply_chat_template(MESSAGES, add_generation_prompt=add_generation_prompt, tokenize=False)
    got = ours.apply_chat_template(MESSAGES, add_generation_prompt=add_generation_prompt)
    assert got == expected
    assert got.startswith("<s><|system|>\nBe brief.<|endoftext|>\n")
    ids = ours.apply_chat_template(MESSAGES, add_generation_prompt=add_generation_prompt, tokenize=True)
    assert ids == ours.encode(expected, add_special_tokens=False)


def test_chat_template_tojson_and_list_form(tmp_path):
    template = "{% for m in messages %}{{ m | tojson }}\n{% endfor %}"
    d = _write_checkpoint_dir(
        tmp_path / "m",
        byte_level_bpe(),
        tok_cfg={"chat_template": [{"name": "tool_use", "template": "x"}, {"name": "default", "template": template}]},
    )
    out = load_tokenizer(d).apply_chat_template([{"role": "user", "content": "<é>"}])
    assert out == '{"role": "user", "content": "<é>"}\n'


def test_chat_template_from_jinja_file(tmp_path):
    d = _write_checkpoint_dir(tmp_path / "m", byte_level_bpe())
    (d / "chat_template.jinja").write_text("{% for m in messages %}[{{ m.role }}]{{ m.content }}{% endfor %}")
    assert load_tokenizer(d).apply_chat_template([{"role": "user", "content": "hey"}]) == "[user]hey"


def test_chat_template_errors(tmp_path):
    tok = load_tokenizer(_chat_dir(tmp_path, CHATML))
    with pytest.raises(jinja2.exceptions.TemplateError, match="system must come first"):
        tok.apply_chat_template([{"role": "user", "content": "a"}, {"role": "system", "content": "b"}])
    with pytest.raises(ValueError, match="role"):
        tok.apply_chat_template([{"content": "no role"}])
    no_template = load_tokenizer(_write_checkpoint_dir(tmp_path / "plain", byte_level_bpe()))
    with pytest.raises(ValueError, match="no chat template"):
        no_template.apply_chat_template(MESSAGES)


def test_chat_template_is_sandboxed(tmp_path):
    evil = "{{ messages.__class__.__mro__[1].__subclasses__() }}"
    tok = load_tokenizer(_chat_dir(tmp_path, evil))
    with pytest.raises(jinja2.exceptions.SecurityError):
        tok.apply_chat_template(MESSAGES)
    evil_ns = "{% set ns = namespace() %}{% set ns._x = 1 %}"
    tok = load_tokenizer(_write_checkpoint_dir(tmp_path / "ns", byte_level_bpe(), tok_cfg={"chat_template": evil_ns}))
    with pytest.raises(jinja2.exceptions.SecurityError):
        tok.apply_chat_template(MESSAGES)
