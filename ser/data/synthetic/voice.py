"""The voice of the synthetic corpus: seeded, speech-like utterances of acted emotions.

Voiced, syllabic utterances from a glottal-pulse source and formant filters, where the
seven classes differ in prosody the way acted emotions are usually described (pitch
level and range, speaking rate, loudness, voice quality, tremolo, jitter and shimmer).
Speakers differ in base pitch and vocal-tract length, every utterance draws its own
variation around its class, and background noise is added, so the task is learnable
but not trivial. ser.data.synthetic.corpus names and writes the files.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
from scipy import signal as sps


@dataclass(frozen=True)
class Speaker:
    pitch_hz: float  # habitual F0
    formant_scale: float  # shorter vocal tract -> higher formants
    expressiveness: float  # how strongly this speaker acts the class differences


# Same order as the corpus's SPEAKER_CODES (ser.data.synthetic.corpus); sexes follow
# EMODB (03 male, 08 female, 09 female, ...).
SPEAKERS = (
    Speaker(112.0, 1.00, 1.00),
    Speaker(205.0, 1.16, 1.05),
    Speaker(228.0, 1.20, 0.90),
    Speaker(124.0, 1.04, 1.10),
    Speaker(104.0, 0.97, 0.95),
    Speaker(132.0, 1.02, 1.00),
    Speaker(214.0, 1.18, 1.10),
    Speaker(196.0, 1.14, 0.95),
    Speaker(118.0, 1.01, 1.05),
    Speaker(236.0, 1.22, 1.00),
)


@dataclass(frozen=True)
class _Prosody:
    """How a class is acted; offsets are relative to the speaker's habitual voice."""

    pitch_st: float  # mean F0 shift, semitones
    range_st: float  # pitch accent height, semitones
    rate: float  # syllables per second
    level_db: float  # loudness
    open_quotient: float  # glottal open phase fraction: small = pressed, bright voice
    tilt: float  # one-pole low-pass coefficient on the source: larger = darker voice
    jitter: float  # relative F0 perturbation
    shimmer: float  # relative amplitude perturbation
    tremolo: float  # 6-7 Hz amplitude/F0 modulation depth
    breath: float  # aspiration noise relative to the voiced source
    pause_s: float  # mean pause between words
    final_st: float  # pitch movement over the last word (rise > 0, fall < 0)
    formant_shift: float  # multiplicative formant shift (smiling raises, sadness lowers)


# Loosely after the vocal-emotion literature (e.g. Scherer 2003; Juslin & Laukka 2003),
# exaggerated so that a small corpus is learnable. Confusable pairs are kept close on
# some cues, as in real acted speech: anger/happiness (high, loud), boredom/sadness (low,
# slow), neutral/disgust.
# fmt: off
_CLASS_PROSODY: dict[str, _Prosody] = {
    #                      pitch range rate level  oq    tilt  jitter shimmer trem breath pause final formant
    "anger":     _Prosody(  6.0,  7.5, 6.5,  12.0, 0.35, 0.15, 0.010, 0.06, 0.00, 0.02, 0.04, -5.0, 1.04),
    "boredom":   _Prosody( -4.5,  0.6, 2.9,  -3.0, 0.77, 0.80, 0.010, 0.05, 0.00, 0.04, 0.25, -0.5, 1.00),
    "disgust":   _Prosody( -2.5,  6.0, 2.7,   1.5, 0.55, 0.52, 0.100, 0.40, 0.00, 0.07, 0.35, -8.0, 0.92),
    "fear":      _Prosody( 11.0,  5.0, 7.0,   3.0, 0.60, 0.45, 0.045, 0.14, 0.60, 0.35, 0.08,  3.0, 1.01),
    "happiness": _Prosody(  7.5, 12.0, 5.3,   6.0, 0.47, 0.32, 0.010, 0.05, 0.00, 0.10, 0.08,  6.0, 1.14),
    "neutral":   _Prosody(  0.0,  3.0, 4.5,   0.0, 0.62, 0.62, 0.010, 0.05, 0.00, 0.05, 0.13, -2.0, 1.00),
    "sadness":   _Prosody( -1.5,  1.5, 2.2, -12.0, 0.85, 0.92, 0.035, 0.10, 0.22, 0.50, 0.45, -2.0, 0.93),
}
# fmt: on

# Per-utterance spread of each prosodic setting at variability 1 (standard deviations).
_SPREAD = {
    "pitch_st": 1.2,
    "range_st": 0.2,  # log scale
    "rate": 0.1,  # log scale
    "level_db": 1.6,
    "open_quotient": 0.05,
    "tilt": 0.05,
    "jitter": 0.3,  # log scale
    "shimmer": 0.3,  # log scale
    "tremolo": 0.05,
    "breath": 0.3,  # log scale
    "pause_s": 0.3,  # log scale
    "final_st": 1.2,
    "formant_shift": 0.012,
}

# Formant frequencies (Hz) of five cardinal vowels for a typical male voice; F4 fixed.
_VOWELS = np.array(
    [
        [730.0, 1090.0, 2440.0, 3400.0],  # a
        [530.0, 1840.0, 2480.0, 3500.0],  # e
        [300.0, 2250.0, 3000.0, 3700.0],  # i
        [570.0, 840.0, 2410.0, 3300.0],  # o
        [320.0, 870.0, 2240.0, 3300.0],  # u
    ]
)
_BANDWIDTHS = np.array([80.0, 100.0, 140.0, 220.0])
_SPEECH_RMS = 0.02  # neutral speech level, leaves headroom for loud classes


@dataclass(frozen=True)
class TextPlan:
    """A 'sentence': its syllables' vowels, stresses and word ends (same for every emotion)."""

    vowels: np.ndarray  # (syllables,) vowel index
    stressed: np.ndarray  # (syllables,) bool
    word_end: np.ndarray  # (syllables,) bool: a pause may follow
    fricative: np.ndarray  # (syllables,) bool: onset is a noise burst, else a voiced onset


def text_plan(seed: int, text_index: int) -> TextPlan:
    rng = np.random.default_rng([seed, 1_000 + text_index])
    count = int(rng.integers(6, 11))
    word_end = np.zeros(count, dtype=bool)
    position = 0
    while position < count:
        position += int(rng.integers(1, 4))
        word_end[min(position, count) - 1] = True
    return TextPlan(
        vowels=rng.integers(0, len(_VOWELS), count),
        stressed=rng.random(count) < 0.35,
        word_end=word_end,
        fricative=rng.random(count) < 0.5,
    )


def _draw_prosody(
    rng: np.random.Generator, emotion: str, speaker: Speaker, variability: float
) -> dict:
    """The class's prosody, scaled by the speaker's expressiveness, plus per-utterance spread."""
    neutral = dataclasses.asdict(_CLASS_PROSODY["neutral"])
    acted = dataclasses.asdict(_CLASS_PROSODY[emotion])
    values = {}
    for name, spread in _SPREAD.items():
        base = neutral[name] + speaker.expressiveness * (acted[name] - neutral[name])
        noise = variability * spread * rng.standard_normal()
        if name in ("range_st", "rate", "jitter", "shimmer", "breath", "pause_s"):
            values[name] = base * math.exp(noise)
        else:
            values[name] = base + noise
    values["open_quotient"] = float(np.clip(values["open_quotient"], 0.3, 0.9))
    values["tilt"] = float(np.clip(values["tilt"], 0.05, 0.95))
    values["tremolo"] = float(np.clip(values["tremolo"], 0.0, 0.6))
    return values


def _smooth_noise(rng: np.random.Generator, n: int, sample_rate: int, rate_hz: float) -> np.ndarray:
    """Unit-variance noise varying at about ``rate_hz``, linearly interpolated to n samples."""
    knots = max(2, int(n * rate_hz / sample_rate) + 2)
    return np.interp(np.linspace(0, knots - 1, n), np.arange(knots), rng.standard_normal(knots))


def _resonators(formants: np.ndarray, bandwidths: np.ndarray, sample_rate: int) -> np.ndarray:
    """Cascade of two-pole resonators with unit gain at DC, as second-order sections."""
    nyquist = sample_rate / 2
    sections = []
    for frequency, bandwidth in zip(formants, bandwidths, strict=True):
        if frequency >= 0.9 * nyquist:
            continue  # a formant above the band would only alias
        r = math.exp(-math.pi * bandwidth / sample_rate)
        c = 2 * r * math.cos(2 * math.pi * frequency / sample_rate)
        sections.append([1 - c + r * r, 0.0, 0.0, 1.0, -c, r * r])
    return np.asarray(sections)


def synthesise(
    rng: np.random.Generator,
    speaker: Speaker,
    emotion: str,
    text: TextPlan,
    *,
    sample_rate: int,
    seconds: float,
    variability: float,
    snr_db: float,
) -> np.ndarray:
    """One utterance as float32 in [-1, 1]: `seconds` long at `sample_rate`.

    `variability` scales the utterance's spread around its class's prosody; `snr_db` is
    the background noise level below neutral speech.
    """
    sr = sample_rate
    n = int(round(seconds * sr))
    p = _draw_prosody(rng, emotion, speaker, variability)
    t = np.arange(n) / sr

    # --- timeline: syllables (stressed ones longer) separated by word pauses
    count = len(text.vowels)
    durations = rng.uniform(0.75, 1.25, count) / p["rate"] * np.where(text.stressed, 1.25, 0.9)
    pauses = np.where(text.word_end, p["pause_s"] * rng.uniform(0.5, 1.5, count), 0.0)
    pauses[-1] = 0.0
    starts = rng.uniform(0.04, 0.15) + np.concatenate(([0.0], np.cumsum(durations + pauses)[:-1]))
    ends = starts + durations
    # Which syllable each sample belongs to, and where in it (0..1); -1 = pause/silence.
    index = np.searchsorted(starts, t, side="right") - 1
    inside = (index >= 0) & (t < ends[np.clip(index, 0, None)])
    index = np.where(inside, index, -1)
    safe = np.clip(index, 0, None)
    position = np.where(inside, (t - starts[safe]) / durations[safe], 0.0)

    # --- pitch contour (semitones around the speaker's habitual pitch)
    speech_end = min(ends[-1], seconds)
    progress = np.clip(t / max(speech_end, 1e-3), 0.0, 1.0)
    accent_heights = np.where(text.stressed, 1.0, 0.25) * rng.uniform(0.6, 1.2, count)
    accent = accent_heights[safe] * np.sin(np.pi * position) ** 2 * inside
    last_word_start = (
        starts[np.flatnonzero(text.word_end[:-1])[-1] + 1]
        if text.word_end[:-1].any()
        else starts[0]
    )
    final = np.clip((t - last_word_start) / max(ends[-1] - last_word_start, 1e-3), 0.0, 1.0)
    tremolo_rate = rng.uniform(5.5, 7.5)
    tremolo = p["tremolo"] * np.sin(2 * np.pi * tremolo_rate * t + rng.uniform(0, 2 * np.pi))
    semitones = (
        p["pitch_st"]
        - 1.5 * progress  # declination
        + p["range_st"] * accent
        + p["final_st"] * final
        + 0.6 * _smooth_noise(rng, n, sr, 3.0)  # slow wander
        + 12 * p["jitter"] * _smooth_noise(rng, n, sr, 150.0)  # cycle-to-cycle jitter
        + 0.8 * tremolo
    )
    f0 = speaker.pitch_hz * 2.0 ** (semitones / 12.0)

    # --- glottal source: Rosenberg-like flow pulse, differentiated, then tilted
    phase = np.cumsum(f0 / sr) + rng.random()
    cycle = phase % 1.0
    oq = p["open_quotient"]
    rise = 0.65 * oq
    flow = np.where(
        cycle < rise,
        0.5 * (1 - np.cos(np.pi * cycle / rise)),
        np.where(cycle < oq, np.cos(0.5 * np.pi * (cycle - rise) / (oq - rise)), 0.0),
    )
    source = np.diff(flow, prepend=flow[0]) * sr / speaker.pitch_hz
    # Lip radiation (+6 dB/octave) restores the highs a real voice has; then a one-pole
    # low-pass whose coefficient is the class's spectral tilt (dark or bright voice).
    source = np.diff(source, prepend=0.0) * 4.0
    a = p["tilt"]
    source = sps.lfilter([1 - a], [1, -a], source) * (1 + 4 * a)
    breath_noise = rng.standard_normal(n) * (0.3 + flow)  # aspiration is pulsed with the flow
    source = source + p["breath"] * 3.0 * breath_noise

    # --- vocal tract: filter the whole source with each vowel's formants, then pick per
    # syllable. The switch falls where the syllable envelope is zero, so it cannot click.
    scale = speaker.formant_scale * p["formant_shift"]
    vowel_of_sample = np.where(inside, text.vowels[safe], -1)
    voiced = np.zeros(n)
    for v in np.unique(vowel_of_sample[inside]):
        sos = _resonators(_VOWELS[v] * scale, _BANDWIDTHS * math.sqrt(scale), sr)
        mask = vowel_of_sample == v
        voiced[mask] = sps.sosfilt(sos, source)[mask]

    # --- amplitude: syllable envelope, stress, shimmer, tremolo; fricative onsets
    envelope = np.sin(np.pi * np.clip(position, 0, 1)) ** 0.7 * inside
    stress_gain = np.where(text.stressed, 1.0, 0.7)[safe]
    shimmer = np.exp(p["shimmer"] * _smooth_noise(rng, n, sr, 120.0))
    amplitude = envelope * stress_gain * shimmer * (1 + tremolo)
    onset = inside & (position < 0.22)
    voiced = voiced * np.where(onset & text.fricative[safe], 0.15, 1.0)
    speech = voiced * amplitude
    speech_rms = math.sqrt(np.mean(speech[inside] ** 2)) if inside.any() else 1.0
    speech *= _SPEECH_RMS * 10 ** (p["level_db"] / 20) / max(speech_rms, 1e-9)

    hiss = sps.lfilter([1.0, -1.6, 0.64], [1.0], rng.standard_normal(n))  # high-pass: /s/, /f/
    burst = onset & text.fricative[safe]
    speech += (
        0.25
        * _SPEECH_RMS
        * 10 ** (p["level_db"] / 20)
        * hiss
        * burst
        * np.sin(np.pi * np.clip(position / 0.22, 0, 1))
    )

    # --- recording: session gain and background noise (pinkish, independent of class)
    speech *= 10 ** (rng.normal(0.0, 1.0) / 20)
    noise = sps.lfilter([1.0], [1.0, -0.7], rng.standard_normal(n))
    noise *= _SPEECH_RMS * 10 ** ((-snr_db + rng.normal(0.0, 2.0)) / 20) / noise.std()
    return np.clip(speech + noise, -1.0, 1.0).astype(np.float32)
