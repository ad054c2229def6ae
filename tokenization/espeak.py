"""espeak-ng speech synthesis for the bundled samples, through the `espeak-ng` program or its library.

The program (Debian `espeak-ng`) is used when it is on PATH, as before; otherwise the library
that the `espeakng-loader` wheel ships (`libespeak-ng.so` + `espeak-ng-data`) is driven through
its C API, so a fresh machine needs no system package. Either way the output is a 22.05 kHz
16-bit mono WAV, and the same text/voice/rate gives the same bytes on every run: like the
program, each library synthesis runs in a fresh process, because libespeak-ng keeps state
across calls (pitch flutter phase, noise generator) that no API call resets. The two backends
may differ slightly from each other, as two espeak-ng versions do.

    >>> espeak_to_wav("Hello there.", "out/hello.wav", "en-us+f3", 150)
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import sys
import wave
from pathlib import Path

# speak_lib.h
AUDIO_OUTPUT_SYNCHRONOUS = 2  # espeak_AUDIO_OUTPUT: samples come back through the synth callback, no sound device
ESPEAK_RATE = 1  # espeak_PARAMETER espeakRATE, words per minute
POS_CHARACTER = 1  # espeak_POSITION_TYPE
CHARS_UTF8 = 1  # espeakCHARS_UTF8
EE_OK = 0  # espeak_ERROR / espeak_ng_STATUS success
RAND_SEED = 1  # espeak_ng_SetRandSeed: the voice's noise draws, fixed
BACKEND_ENV = "VOCALNET_ESPEAK"  # "program" or "library" forces one (tests); default: program if on PATH


def espeak_to_wav(text: str, wav_path: str | Path, voice: str = "en-us", wpm: int = 160, backend: str | None = None) -> Path:
    """Speak `text` into a 22.05 kHz mono 16-bit WAV.

    Args:
        voice: espeak-ng voice, optionally with a variant (`en-us+f3`).
        wpm: speaking rate, words per minute.
        backend: "program" or "library"; None picks the program when installed, else the library.
    Returns:
        `wav_path`.
    """
    wav_path = Path(wav_path)
    wav_path.parent.mkdir(parents=True, exist_ok=True)
    backend = backend or os.environ.get(BACKEND_ENV) or ("program" if shutil.which("espeak-ng") else "library")
    if backend == "program":
        cmd = ["espeak-ng", "-v", voice, "-s", str(wpm), "-w", str(wav_path), text]
    elif backend == "library":
        lib, data = _library_paths()
        # -I: isolated, so nothing beside this file can shadow the stdlib modules the child imports
        cmd = [sys.executable, "-I", __file__, lib, data, voice, str(wpm), str(wav_path), text]
    else:
        raise ValueError(f"{BACKEND_ENV}={backend!r}: use 'program' or 'library'")
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"espeak-ng ({backend}) failed on {text[:40]!r} with voice {voice}: {_last_line(done.stderr)}")
    return wav_path


def _last_line(stderr: str) -> str:
    """The error itself: the program's message, or the library child's one line (a traceback's last)."""
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    return lines[-1][-500:] if lines else "(no message)"


def _library_paths() -> tuple[str, str]:
    """(libespeak-ng.so, the folder holding espeak-ng-data) from the espeakng-loader wheel."""
    try:
        import espeakng_loader
    except ImportError:
        raise RuntimeError("neither the espeak-ng program nor the espeakng-loader wheel is installed: "
                           "pip install espeakng-loader (or apt-get install -y espeak-ng)") from None
    return espeakng_loader.get_library_path(), str(Path(espeakng_loader.get_data_path()).parent)


def synthesize(lib_path: str, data_parent: str, text: str, voice: str, wpm: int) -> tuple[bytes, int]:
    """16-bit little-endian mono PCM and its rate, from libespeak-ng's C API (once per process)."""
    lib = ctypes.CDLL(lib_path)
    callback_type = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.espeak_SetSynthCallback.argtypes = [callback_type]
    lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
    lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
                                 ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
    rate = lib.espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, 0, data_parent.encode(), 0)
    if rate <= 0:
        raise RuntimeError(f"espeak_Initialize found no usable espeak-ng-data in {data_parent}")
    chunks: list[bytes] = []

    def collect(wav, n, events):
        if wav and n > 0:
            chunks.append(ctypes.string_at(wav, 2 * n))
        return 0  # 0 = go on

    keep = callback_type(collect)  # referenced until synthesis ends: the library calls it
    lib.espeak_SetSynthCallback(keep)
    if lib.espeak_SetVoiceByName(voice.encode()) != EE_OK:
        # a language code (`en-gb`) rather than a voice file: the program looks it up in the voice list,
        # espeak_SetVoiceByName does not, so resolve it here the same way and name the voice file
        resolved = resolve_language(lib, voice)
        if resolved is None or lib.espeak_SetVoiceByName(resolved.encode()) != EE_OK:
            raise ValueError(f"espeak-ng has no voice {voice!r}")
    lib.espeak_SetParameter(ESPEAK_RATE, int(wpm), 0)
    lib.espeak_ng_SetRandSeed(RAND_SEED)
    data = text.encode("utf-8")
    status = lib.espeak_Synth(data, len(data) + 1, 0, POS_CHARACTER, 0, CHARS_UTF8, None, None)
    if status != EE_OK:
        raise RuntimeError(f"espeak_Synth failed with status {status}")
    return b"".join(chunks), rate


class _Voice(ctypes.Structure):
    """speak_lib.h espeak_VOICE; `languages` is a list of (priority byte, language\\0), ended by a 0 byte."""

    _fields_ = [("name", ctypes.c_char_p), ("languages", ctypes.c_void_p), ("identifier", ctypes.c_char_p),
                ("gender", ctypes.c_ubyte), ("age", ctypes.c_ubyte), ("variant", ctypes.c_ubyte), ("xx1", ctypes.c_ubyte),
                ("score", ctypes.c_int), ("spare", ctypes.c_void_p)]


def resolve_language(lib, voice: str) -> str | None:
    """`en-gb+f2` -> `gmw/en+f2`: the voice file whose language list names `en-gb` with the best priority.

    This is how the espeak-ng program turns `-v <language>` into a voice (lower priority number wins,
    the first listed on a tie); the variant after `+` is kept. None when no voice speaks that language.
    """
    language, plus, variant = voice.partition("+")
    lib.espeak_ListVoices.restype = ctypes.POINTER(ctypes.POINTER(_Voice))
    lib.espeak_ListVoices.argtypes = [ctypes.c_void_p]
    voices = lib.espeak_ListVoices(None)
    best: tuple[int, str] | None = None
    i = 0
    while voices[i]:
        entry = voices[i].contents
        pos = entry.languages
        while (priority := ctypes.c_ubyte.from_address(pos).value) != 0:
            name = ctypes.string_at(pos + 1)  # up to its terminating 0 byte
            if name.decode("ascii", "replace").lower() == language.lower() and (best is None or priority < best[0]):
                best = (priority, entry.identifier.decode())
            pos += len(name) + 2
        i += 1
    return None if best is None else best[1] + plus + variant


if __name__ == "__main__":  # the child process of espeak_to_wav(..., backend="library"); stdlib only
    lib_path, data_parent, voice, wpm, out, text = sys.argv[1:7]
    try:
        pcm, rate = synthesize(lib_path, data_parent, text, voice, int(wpm))
    except (ValueError, RuntimeError) as err:  # a bad voice or data folder: one line for the parent, no traceback
        sys.exit(str(err))
    with wave.open(out + ".tmp", "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm)
    os.replace(out + ".tmp", out)
