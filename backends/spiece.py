# SPDX-License-Identifier: Apache-2.0
"""A fast tokenizer from a SentencePiece model's bytes, without the ``sentencepiece`` package.

Public API:
    read_spiece(blob)          the pieces, scores, types, special ids and normaliser of a serialized
                               SentencePiece ``ModelProto``
    spiece_tokenizer(blob)     a transformers ``PreTrainedTokenizerFast`` equal to that model's encoding
                               (T5 convention: ``</s>`` appended, ``<pad>`` for padding)
    SpieceModel

Design notes:
    ComfyUI's UMT5 single files (``models/text_encoders/umt5_xxl_*.safetensors``) carry the tokenizer
    beside the weights, as a uint8 tensor ``spiece_model`` holding the serialized SentencePiece model.
    The model is a protobuf message; only the fields a Unigram encoder needs are read, by their field
    numbers in SentencePiece's ``sentencepiece_model.proto``: ``ModelProto.pieces`` (1: ``piece`` 1,
    ``score`` 2, ``type`` 3), ``trainer_spec`` (2: ``model_type`` 3, ``byte_fallback`` 35, ``unk_id`` 40,
    ``bos_id`` 41, ``eos_id`` 42, ``pad_id`` 43) and ``normalizer_spec`` (3: ``precompiled_charsmap``
    2, ``add_dummy_prefix`` 3, ``remove_extra_whitespaces`` 4). The tokenizer is built with the
    ``tokenizers`` library the way transformers converts a SentencePiece model: the precompiled
    normalisation map, outer spaces stripped and runs collapsed, ``▁`` for spaces with a prefix, words
    encoded one by one (SentencePiece's default ``split_by_whitespace``) by a Unigram model with the
    pieces' scores. Only Unigram models (T5 / UMT5) are accepted.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

__all__ = ["SpieceModel", "read_spiece", "spiece_tokenizer"]

_NORMAL, _UNKNOWN, _CONTROL, _USER, _UNUSED, _BYTE = 1, 2, 3, 4, 5, 6
_UNIGRAM = 1


@dataclass
class SpieceModel:
    pieces: list[tuple[str, float, int]]  # (piece, score, type)
    model_type: int = _UNIGRAM
    byte_fallback: bool = False
    unk_id: int = 0
    bos_id: int = 1
    eos_id: int = 2
    pad_id: int = -1
    charsmap: bytes = b""
    add_dummy_prefix: bool = True
    remove_extra_whitespaces: bool = True


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    out = shift = 0
    while True:
        if i >= len(buf):
            raise ValueError("truncated varint")
        b = buf[i]
        i += 1
        out |= (b & 0x7F) << shift
        if not b & 0x80:
            return out, i
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def _fields(buf: bytes):
    """(field number, wire type, value) of a protobuf message: ints for varints, bytes otherwise."""
    i = 0
    while i < len(buf):
        tag, i = _varint(buf, i)
        field, wire = tag >> 3, tag & 7
        if wire == 0:
            value, i = _varint(buf, i)
        elif wire == 1:
            value, i = buf[i:i + 8], i + 8
        elif wire == 2:
            n, i = _varint(buf, i)
            value, i = buf[i:i + n], i + n
        elif wire == 5:
            value, i = buf[i:i + 4], i + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        if i > len(buf):
            raise ValueError("truncated field")
        yield field, wire, value


def _signed(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def read_spiece(blob: bytes) -> SpieceModel:
    """Parse a serialized SentencePiece model (see the module notes).

    Raises:
        ValueError: not a SentencePiece model (malformed, or holding no pieces).
    """
    model = SpieceModel(pieces=[])
    try:
        for field, wire, value in _fields(blob):
            if field == 1 and wire == 2:
                piece, score, kind = "", 0.0, _NORMAL
                for f, w, v in _fields(value):
                    if f == 1 and w == 2:
                        piece = v.decode("utf-8")
                    elif f == 2 and w == 5:
                        score = struct.unpack("<f", v)[0]
                    elif f == 3 and w == 0:
                        kind = v
                model.pieces.append((piece, score, kind))
            elif field == 2 and wire == 2:
                for f, w, v in _fields(value):
                    if w != 0:
                        continue
                    if f == 3:
                        model.model_type = v
                    elif f == 35:
                        model.byte_fallback = bool(v)
                    elif f in (40, 41, 42, 43):
                        setattr(model, {40: "unk_id", 41: "bos_id", 42: "eos_id", 43: "pad_id"}[f], _signed(v))
            elif field == 3 and wire == 2:
                for f, w, v in _fields(value):
                    if f == 2 and w == 2:
                        model.charsmap = bytes(v)
                    elif f == 3 and w == 0:
                        model.add_dummy_prefix = bool(v)
                    elif f == 4 and w == 0:
                        model.remove_extra_whitespaces = bool(v)
    except (ValueError, UnicodeDecodeError, struct.error) as exc:
        raise ValueError(f"not a SentencePiece model ({exc})") from None
    if not model.pieces:
        raise ValueError("not a SentencePiece model (no pieces)")
    return model


def spiece_tokenizer(blob: bytes, what: str = "SentencePiece model"):
    """A ``PreTrainedTokenizerFast`` encoding as the SentencePiece model ``blob`` does, with the T5
    conventions of UMT5 (``</s>`` appended to every sequence, ``<pad>`` padding).

    Raises:
        ValueError: naming ``what``, for a blob that is not a Unigram SentencePiece model.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    try:
        sp = read_spiece(bytes(blob))
    except ValueError as exc:
        raise ValueError(f"{what}: {exc}") from None
    if sp.model_type != _UNIGRAM:
        raise ValueError(f"{what}: SentencePiece model type {sp.model_type}; only Unigram (T5 / UMT5) is supported")
    n = len(sp.pieces)
    for name in ("unk_id", "eos_id"):
        if not 0 <= getattr(sp, name) < n:
            raise ValueError(f"{what}: {name} {getattr(sp, name)} is outside the {n} pieces")
    tok = Tokenizer(models.Unigram([(p, s) for p, s, _ in sp.pieces], unk_id=sp.unk_id,
                                   byte_fallback=sp.byte_fallback))
    norms = [normalizers.Precompiled(sp.charsmap)] if sp.charsmap else []
    if sp.remove_extra_whitespaces:  # SentencePiece drops leading / trailing spaces and collapses runs
        norms += [normalizers.Strip(), normalizers.Replace(Regex(" {2,}"), " ")]
    if norms:
        tok.normalizer = normalizers.Sequence(norms)
    scheme = "always" if sp.add_dummy_prefix else "never"
    # pieces never span a space (SentencePiece's default split_by_whitespace): each word is encoded alone
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme=scheme, split=True)
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme=scheme)
    eos = sp.pieces[sp.eos_id][0]
    tok.post_processor = processors.TemplateProcessing(single=f"$A {eos}", pair=f"$A {eos} $B {eos}",
                                                       special_tokens=[(eos, sp.eos_id)])
    special = {"unk_token": sp.pieces[sp.unk_id][0], "eos_token": eos}
    if 0 <= sp.pad_id < n:
        special["pad_token"] = sp.pieces[sp.pad_id][0]
    controls = [p for p, _, kind in sp.pieces if kind == _CONTROL and p not in special.values()]
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, **special)
    if controls:
        fast.add_special_tokens({"additional_special_tokens": controls})
    return fast
