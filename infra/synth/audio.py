"""Stadium sound for multi-angle renders: crowd noise plus the referee's whistles, in world time.

Every angle hears the same world, so two angles' audio line up exactly when their offsets are
accounted for: that is what ingest's sync check measures by cross-correlation.
"""

from __future__ import annotations

import numpy as np

from infra.synth.encode import AUDIO_RATE
from infra.synth.world import World


def match_audio(world: World, offset_s: float, duration_s: float) -> np.ndarray:
    """Mono float32 samples for world time ``[offset_s, offset_s + duration_s)``."""
    n = round(duration_s * AUDIO_RATE)
    t = offset_s + np.arange(n) / AUDIO_RATE
    # Crowd noise is a function of world time (seeded per whole second), not of the angle.
    rng_noise = np.empty(n, np.float32)
    first, last = int(np.floor(t[0])), int(np.floor(t[-1])) if n else 0
    for second in range(first, last + 1):
        rng = np.random.default_rng([world.seed, 7, second])
        block = rng.standard_normal(AUDIO_RATE).astype(np.float32)
        sel = (t >= second) & (t < second + 1)
        idx = np.round((t[sel] - second) * AUDIO_RATE).astype(int).clip(0, AUDIO_RATE - 1)
        rng_noise[sel] = block[idx]
    # The crowd's loudness changes every 0.1 s of world time (claps, chants, groans): a structure that
    # survives AAC, which keeps loudness but not the noise waveform.
    steps = np.floor(t * 10).astype(np.int64)
    lo, hi = int(steps.min()) if n else 0, int(steps.max()) if n else 0
    levels = np.array(
        [np.random.default_rng([world.seed, 8, k]).uniform(0.2, 1.0) for k in range(lo, hi + 1)], np.float32
    )
    swell = levels[steps - lo] if n else np.zeros(0, np.float32)
    signal = 0.08 * rng_noise * swell
    for whistle in world.whistles:
        on = (t >= whistle.time_s) & (t < whistle.time_s + whistle.duration_s)
        signal[on] += 0.4 * np.sin(2 * np.pi * 3150.0 * t[on])
    return np.clip(signal, -1.0, 1.0).astype(np.float32)
