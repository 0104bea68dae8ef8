"""Games: chaining a team's track fragments into players, and giving tiny tracks to an identity.

How a link is costed (look, stature, gap, motion) is explained in :mod:`tasks.cluster`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from itertools import pairwise

import numpy as np
from scipy.optimize import linear_sum_assignment

from tasks.cluster_base import ClusterParams, Identity, TrackInfo

NUMBER_CONFLICT = 1e6  # two tracks read with different shirt numbers are two players


def motion_excess(a: TrackInfo, b: TrackInfo, params: ClusterParams) -> float:
    """Box heights by which the jump from ``a``'s end to ``b``'s start beats a sprint (0 if plausible)."""
    return jump_excess(a, b, params.motion_slack_heights, params.max_speed_heights_s)


def jump_excess(a: TrackInfo, b: TrackInfo, slack_heights: float, speed_heights_s: float) -> float:
    """Box heights by which the jump from ``a``'s end to ``b``'s start beats an allowance of
    ``slack_heights + speed_heights_s x gap`` (0 if within it)."""
    gap = max(0.0, b.start - a.end)
    return max(0.0, jump_heights(a, b) - (speed_heights_s * gap + slack_heights))


def look_distance(a: TrackInfo, b: TrackInfo, params: ClusterParams) -> float:
    """Distance between two tracks' looks, less what their sampling noise alone would put between them.

    A look is the median of a track's samples; one sample strays ``look_noise`` from its track's
    median (rms), so two estimates from ``na`` and ``nb`` samples differ by about
    ``look_noise * sqrt(1/na + 1/nb)`` even for one player. That part is taken off in quadrature.
    """
    raw = float(np.linalg.norm(a.features["look"] - b.features["look"]))
    if "look_samples" not in a.features or "look_samples" not in b.features:
        return raw
    na, nb = float(a.features["look_samples"][0]), float(b.features["look_samples"][0])
    noise = params.look_noise**2 * (1.0 / max(na, 1.0) + 1.0 / max(nb, 1.0))
    return float(np.sqrt(max(0.0, raw**2 - noise)))


def refound_at_end(a: TrackInfo, b: TrackInfo, params: ClusterParams) -> bool:
    """Whether ``b`` starts where and when ``a`` ends: the tracker lost ``a``'s player (an occlusion)
    and found him again at once under a new track, so ``a`` continues there or nowhere."""
    return b.start - a.end <= params.refound_s + 1e-6 and jump_heights(a, b) <= params.motion_slack_heights


def crosses_picture(a: TrackInfo, b: TrackInfo, params: ClusterParams) -> bool:
    """Whether ``b`` starts across more than ``unseen_crossing`` of the picture's width from where
    ``a`` ends: a player does not cross most of the picture unseen (he would be detected on the way),
    nor leave by one side and come back by the other."""
    if "picture_width" not in a.features:
        return False
    dx = abs((b.first_box[0] + b.first_box[2]) - (a.last_box[0] + a.last_box[2])) / 2
    return bool(dx > params.unseen_crossing * float(a.features["picture_width"][0]))


def link_cost(a: TrackInfo, b: TrackInfo, appearance: float, params: ClusterParams) -> float:
    """Cost of ``b`` continuing ``a`` (``a`` ends before ``b`` starts); see the module docstring."""
    gap = max(0.0, b.start - a.end)
    number_a, number_b = a.features.get("number"), b.features.get("number")
    if number_a is not None and number_b is not None:
        if int(number_a[0]) != int(number_b[0]):
            return NUMBER_CONFLICT
        appearance = 0.0  # one shirt number: the look has nothing to add
    cost = appearance + params.gap_cost_per_s * gap
    if "stature" in a.features and "stature" in b.features:
        cost += params.stature_weight * abs(float(a.features["stature"][0] - b.features["stature"][0]))
    if gap <= params.max_gap_s:
        allowance = params.max_speed_heights_s * gap + params.motion_slack_heights
        cost += params.motion_soft * min(1.0, jump_heights(a, b) / allowance)
        cost += params.motion_weight * motion_excess(a, b, params)
    else:
        cost += params.motion_soft  # no evidence either way
    return cost


def merge_fragments(
    infos: dict[int, TrackInfo], members: Sequence[int], params: ClusterParams
) -> list[set[int]]:
    """Chain one team's tracks into identities: each track is continued by at most one later track.

    The links are chosen together (Hungarian assignment of track ends to track starts, where leaving
    an end unlinked costs ``merge_max_cost``), so one ambiguous pair cannot steal the link that
    would have made two others right, as a greedy cheapest-first merge does.
    """
    ids = sorted(members, key=lambda t: (infos[t].start, t))
    n = len(ids)
    if n < 2:
        return [{t} for t in ids]
    big = 1e6
    cost = np.full((n, 2 * n), big)
    for i, a in enumerate(ids):
        cost[i, n + i] = params.merge_max_cost
        ia = infos[a]
        later = [
            j
            for j, b in enumerate(ids)
            if not (
                i == j
                or ia.angle != infos[b].angle
                or ia.end > infos[b].start + params.overlap_tolerance_s + 1e-6
                or ia.start >= infos[b].start
                or ia.end >= infos[b].end
            )
        ]
        later = [j for j in later if not crosses_picture(ia, infos[ids[j]], params)]
        refound = [j for j in later if refound_at_end(ia, infos[ids[j]], params)]
        for j in refound or later:
            ib = infos[ids[j]]
            cost[i, j] = min(big, link_cost(ia, ib, look_distance(ia, ib, params), params))
    rows, cols = linear_sum_assignment(cost)
    successor = {
        ids[r]: ids[c]
        for r, c in zip(rows, cols, strict=True)
        if c < n and cost[r, c] < params.merge_max_cost
    }
    has_predecessor = set(successor.values())
    chains: list[set[int]] = []
    for t in ids:
        if t in has_predecessor:
            continue
        chain = {t}
        while t in successor:
            t = successor[t]
            chain.add(t)
        chains.append(chain)
    return sorted(chains, key=lambda g: min((infos[t].start, t) for t in g))


def stretches(
    times: np.ndarray, sample_times: np.ndarray, gap_s: float, min_rows: int
) -> list[tuple[int, int]]:
    """Row ranges ``[a, b)`` of a track cut where no row was seen for more than ``gap_s``.

    A stretch must have ``min_rows`` rows and a sample in it (else its look is unknown); one that
    has not is left out (it is more than ``gap_s`` from the rest of the track, so nothing says it
    is the same player, and glued to a neighbour it would move where that stretch ends or starts).
    If no stretch can be judged, the track is one stretch.
    """
    cuts = [0, *(np.flatnonzero(np.diff(times) > gap_s) + 1).tolist(), len(times)]

    def judged(a: int, b: int) -> bool:
        seen = (sample_times >= times[a] - 1e-6) & (sample_times <= times[b - 1] + 1e-6)
        return b - a >= min_rows and bool(seen.any())

    pieces = [(a, b) for a, b in pairwise(cuts) if judged(a, b)]
    return pieces or [(0, len(times))]


def team_switch(
    times: np.ndarray, votes: Sequence[str | None], min_samples: int, share: float = 0.8
) -> tuple[float, str, str] | None:
    """Where a track's samples switch from one team's kit to the other's, if they clearly do: the
    time of the switch and the teams before and after it. Each side needs ``min_samples`` samples
    of which ``share`` vote for its team (the best such cut, by samples agreeing with their side)."""
    order = np.argsort(times, kind="stable")
    t, v = times[order], [votes[i] for i in order]
    best: tuple[int, tuple[float, str, str]] | None = None
    for k in range(min_samples, len(v) - min_samples + 1):
        (before, nb), (after, na) = Counter(v[:k]).most_common(1)[0], Counter(v[k:]).most_common(1)[0]
        if before is None or after is None or before == after:
            continue
        if nb >= share * k and na >= share * (len(v) - k) and (best is None or nb + na > best[0]):
            best = (nb + na, ((t[k - 1] + t[k]) / 2, before, after))
    return None if best is None else best[1]


INNER_MIN_SAMPLES = 10  # a label inside another's run needs this many samples to be cut out
INNER_SHARE = 0.9  # of which this share, and this share of the samples around it, their own label


def inner_switch(
    times: np.ndarray, labels: Sequence[str], min_samples: int, inner_min: int, share: float
) -> list[float]:
    """Where a sequence of labels switches to another label and back, when no single cut divides it
    (one label around another's): the two cuts of the block of ``inner_min`` or more labels, ``share``
    of them one label, with ``min_samples`` or more labels on either side of it of which ``share``
    are one other label (the block agreeing most with its own label and the rest with theirs); none
    if none does. Blocks start and end where the label changes."""
    order = np.argsort(times, kind="stable")
    t, v = times[order], [labels[i] for i in order]
    n = len(v)
    if n < inner_min + min_samples:
        return []
    names = sorted(set(v))
    counts = np.zeros((n + 1, len(names)), np.int64)
    for i, label in enumerate(v):
        counts[i + 1] = counts[i]
        counts[i + 1, names.index(label)] += 1
    changes = [k for k in range(1, n) if v[k] != v[k - 1]]
    best: tuple[int, float, float] | None = None
    for a in changes:
        for b in changes:
            inner = counts[b] - counts[a]
            size = b - a
            if size < inner_min or a < min_samples or n - b < min_samples:
                continue
            outer = counts[n] - inner
            own, other = int(inner.argmax()), int(outer.argmax())
            agree = int(inner[own]) + int(outer[other])
            if own == other or inner[own] < share * size or outer[other] < share * (n - size):
                continue
            if best is None or agree > best[0]:
                best = (agree, float((t[a - 1] + t[a]) / 2), float((t[b - 1] + t[b]) / 2))
    return [] if best is None else [best[1], best[2]]


def label_switches(times: np.ndarray, labels: Sequence[str], min_samples: int, share: float) -> list[float]:
    """Every time a (time-sorted) sequence of labels clearly switches from one label to another:
    :func:`team_switch`'s best cut, then the same on each side of it, recursively; where no single
    cut divides a part, a long block of one label inside another's (:func:`inner_switch`)."""
    switch = team_switch(times, labels, min_samples, share)
    if switch is None:
        return inner_switch(times, labels, min_samples, INNER_MIN_SAMPLES, INNER_SHARE)
    left = times < switch[0]
    before = [v for v, k in zip(labels, left, strict=True) if k]
    after = [v for v, k in zip(labels, left, strict=True) if not k]
    return [
        *label_switches(times[left], before, min_samples, share),
        switch[0],
        *label_switches(times[~left], after, min_samples, share),
    ]


def _winners(chains: list[set[int]], owner: dict[int, int], infos: dict[int, TrackInfo]) -> dict[int, int]:
    """For every track, the index of the chain holding most of its rows (the first of equals)."""
    best: dict[int, tuple[int, int]] = {}
    for k, chain in enumerate(chains):
        rows: Counter[int] = Counter()
        for s in chain:
            rows[owner[s]] += infos[s].samples
        for t, n in rows.items():
            if t not in best or n > best[t][0]:
                best[t] = (n, k)
    return {t: k for t, (_, k) in best.items()}


def unclaimed_cuts(
    chains: list[set[int]], owner: dict[int, int], infos: dict[int, TrackInfo], params: ClusterParams
) -> set[int]:
    """Tracks cut in stretches where a stretch that does not go with the track was chained to no
    other track: nothing says it is someone else, so the track is better chained whole. A stretch
    that lies on the path of the chain its track goes with (median within ``shadow_track_distance``
    box heights, see :func:`path_distance`) is a second box on that chain's player: it confirms the
    cut."""
    winner = _winners(chains, owner, infos)
    doubtful: set[int] = set()
    for k, chain in enumerate(chains):
        owners = {owner[s] for s in chain}
        if len(owners) == 1 and any(owner[s] != s for s in chain):
            (t,) = owners
            if winner[t] == k:
                continue
            on_own_chain = path_distance(chain, chains[winner[t]], infos, params.shadow_window_s)
            if on_own_chain > params.shadow_track_distance:
                doubtful.add(t)
    return doubtful


def regroup(
    chains: list[set[int]], owner: dict[int, int], infos: dict[int, TrackInfo]
) -> list[tuple[int, set[int]]]:
    """Chains of stretches back to sets of tracks: a track cut in stretches goes with the chain that
    holds most of its rows (an identity is a set of whole tracks). Returns (chain index, tracks)."""
    groups: list[set[int]] = [set() for _ in chains]
    for t, k in _winners(chains, owner, infos).items():
        groups[k].add(t)
    return [(k, g) for k, g in enumerate(groups) if g]


def overlaps(infos: dict[int, TrackInfo], left: set[int], right: set[int]) -> bool:
    return any(
        infos[a].angle == infos[b].angle and infos[a].start <= infos[b].end and infos[b].start <= infos[a].end
        for a in left
        for b in right
    )


def attach_tiny(
    identities: list[Identity], tiny: Sequence[int], infos: dict[int, TrackInfo], params: ClusterParams
) -> list[Identity]:
    """Give each tiny track (too few rows to judge its colours) to the identity it continues.

    A tiny track joins the identity with a member ending within ``tiny_gap_s`` before it starts (or
    starting just after it ends) at a plausible distance (no motion penalty), the nearest such; an
    orphan becomes an ``other`` identity of its own (a flicker, a false detection).
    """
    for t in tiny:
        me = infos[t]
        best: tuple[float, int] | None = None
        for index, ident in enumerate(identities):
            if overlaps(infos, ident.tracks, {t}):
                continue
            for m in ident.tracks:
                other = infos[m]
                if other.angle != me.angle:
                    continue
                first, second = (other, me) if other.end <= me.start else (me, other)
                if second.start - first.end > params.tiny_gap_s:
                    continue
                jump = jump_heights(first, second)
                if motion_excess(first, second, params) <= 0 and (best is None or jump < best[0]):
                    best = (jump, index)
        if best is None:
            identities.append(Identity("other", {t}, confidence=0.0))
        else:
            identities[best[1]].tracks.add(t)
    return identities


def shadow_distance(shadow: Identity, host: Identity, infos: dict[int, TrackInfo], window_s: float) -> float:
    """Median over ``shadow``'s rows of the distance (box heights, foot to foot) to ``host``'s nearest
    box seen within ``window_s`` of it in the same angle (infinite where the host is not seen)."""
    angle = {infos[t].angle for t in shadow.tracks}
    host_rows = [infos[t].path for t in host.tracks if infos[t].angle in angle]
    mine = np.concatenate([infos[t].path for t in shadow.tracks])
    if not host_rows or len(mine) == 0:
        return float("inf")
    theirs = np.concatenate(host_rows)
    near = np.abs(mine[:, None, 0] - theirs[None, :, 0]) <= window_s + 1e-6
    feet = np.hypot(mine[:, None, 1] - theirs[None, :, 1], mine[:, None, 2] - theirs[None, :, 2])
    height = np.maximum(1.0, (mine[:, None, 3] + theirs[None, :, 3]) / 2)
    per_row = np.where(near, feet / height, np.inf).min(axis=1)
    return float(np.median(per_row))


def path_distance(shadow: set[int], host: set[int], infos: dict[int, TrackInfo], window_s: float) -> float:
    """Median over ``shadow``'s rows of the distance (box heights, foot to foot) to where ``host``'s
    nearest track is at that moment: its path read between the rows on either side (within
    ``window_s``), so a fast run seen on alternate frames by two boxes is not taken for a gap
    between them (infinite where the host is not seen)."""
    mine = np.concatenate([infos[t].path for t in shadow])
    angles = {infos[t].angle for t in shadow}
    best = np.full(len(mine), np.inf)
    for h in host:
        path = infos[h].path
        if infos[h].angle not in angles or len(path) == 0:
            continue
        after = np.clip(np.searchsorted(path[:, 0], mine[:, 0]), 1, max(1, len(path) - 1))
        before = after - 1
        if len(path) == 1:
            after = before
        t0, t1 = path[before, 0], path[after, 0]
        span = np.maximum(t1 - t0, 1e-9)
        w = np.clip((mine[:, 0] - t0) / span, 0.0, 1.0)[:, None]
        at = path[before, 1:] * (1 - w) + path[after, 1:] * w
        nearest = np.minimum(np.abs(mine[:, 0] - t0), np.abs(mine[:, 0] - t1))
        inside = (mine[:, 0] >= t0 - 1e-6) & (mine[:, 0] <= t1 + 1e-6) & (t1 - t0 <= 2 * window_s + 1e-6)
        near = inside | (nearest <= window_s + 1e-6)
        feet = np.hypot(mine[:, 1] - at[:, 0], mine[:, 2] - at[:, 1])
        height = np.maximum(1.0, (mine[:, 3] + at[:, 2]) / 2)
        best = np.minimum(best, np.where(near, feet / height, np.inf))
    return float(np.median(best))


def shirt_number(tracks: set[int], infos: dict[int, TrackInfo]) -> int | None:
    """The jersey number of a set of tracks: the one most of its numbered tracks' samples read."""
    votes: Counter[int] = Counter()
    for t in tracks:
        number = infos[t].features.get("number")
        if number is not None:
            votes[int(number[0])] += infos[t].samples
    return votes.most_common(1)[0][0] if votes else None


def track_shadows(
    infos: dict[int, TrackInfo], members: Sequence[int], params: ClusterParams
) -> dict[int, int]:
    """The short tracks (fewer than ``shadow_max_rows`` rows) of one team that lie, all their life,
    on top of a longer team-mate track (median within ``shadow_track_distance`` box heights, and
    inside its time span), each with that host: a duplicate box, left out of the chaining. A short
    track that reads a jersey number is chained like any other: it may be a team-mate running with
    the host (link cuts a track where its number switches, and leaves such short parts), and a
    duplicate box reading the host's number still ends up with him (:func:`merge_by_number`)."""
    short = [
        t for t in members if infos[t].samples < params.shadow_max_rows and shirt_number({t}, infos) is None
    ]
    hosts = [t for t in members if infos[t].samples >= params.shadow_max_rows]
    out = {}
    for t in short:
        me = Identity("player", {t})
        near = [
            (shadow_distance(me, Identity("player", {h}), infos, params.shadow_window_s), h)
            for h in hosts
            if infos[h].start <= infos[t].start and infos[t].end <= infos[h].end
        ]
        best = min(near, default=(float("inf"), -1))
        if best[0] <= params.shadow_track_distance:
            out[t] = best[1]
    return out


def absorb_shadows(
    identities: list[Identity], infos: dict[int, TrackInfo], params: ClusterParams
) -> list[Identity]:
    """Give each *shadow* — a short player identity that stays on top of a team-mate — to that team-mate.

    A player identity with fewer than ``shadow_max_rows`` rows whose rows lie (median) within
    ``shadow_distance`` box heights of a longer same-team identity's boxes seen within
    ``shadow_window_s`` joins the nearest such identity: it is the tracker's second box on one
    player (a swap or a duplicate while two players cross), not a player of its own. A brief real
    appearance (a player crossing a corner of the picture) is not on top of anyone and stays; nor
    does one that reads another jersey number than the identity it lies on (a second player).
    """

    def rows(d: Identity) -> int:
        return sum(infos[t].samples for t in d.tracks)

    hosts = [d for d in identities if d.kind == "player" and rows(d) >= params.shadow_max_rows]
    kept: list[Identity] = []
    for d in identities:
        if d.kind != "player" or rows(d) >= params.shadow_max_rows:
            kept.append(d)
            continue
        number = shirt_number(d.tracks, infos)
        near = [
            (shadow_distance(d, h, infos, params.shadow_window_s), i)
            for i, h in enumerate(hosts)
            if h.team == d.team and (number is None or shirt_number(h.tracks, infos) in (None, number))
        ]
        best = min(near, default=(float("inf"), -1))
        if best[0] <= params.shadow_distance:
            hosts[best[1]].tracks |= d.tracks
        else:
            kept.append(d)
    return kept


def stand_on_players(
    identities: list[Identity],
    tall: Sequence[int],
    team_of: dict[int, str | None],
    confidence: dict[int, float],
    infos: dict[int, TrackInfo],
    params: ClusterParams,
) -> list[Identity]:
    """Give each *two-person* track (far taller than the people around it: one box over two
    players, one standing behind the other, left out of the chaining) to the team-mate identity
    whose gap it bridges (:func:`bridged_identity`: the player behind), else to the one on whose
    feet it stands — its rows' feet (median) within ``shadow_distance`` box heights of that
    identity's boxes seen within ``shadow_window_s`` — the nearest such; with neither, it is a
    player identity of its own."""
    for t in tall:
        me = Identity("player", {t}, team=team_of[t], confidence=confidence.get(t, 0.5))
        near = [
            (shadow_distance(me, d, infos, params.shadow_window_s), i)
            for i, d in enumerate(identities)
            if d.kind == "player" and d.team == me.team
        ]
        best = min(near, default=(float("inf"), -1))
        bridged = bridged_identity(t, identities, me.team, infos, params)
        if bridged is not None:
            identities[bridged].tracks.add(t)
        elif best[0] <= params.shadow_distance:
            identities[best[1]].tracks.add(t)
        else:
            identities.append(me)
    return identities


def bridged_identity(
    t: int, identities: list[Identity], team: str | None, infos: dict[int, TrackInfo], params: ClusterParams
) -> int | None:
    """The index of the one ``team`` player identity whose gap track ``t`` bridges, if exactly one does:
    unseen while ``t`` lasts, its last track before ends at most ``bridge_gap_s`` before ``t``
    starts and its first track after starts at most ``bridge_gap_s`` after ``t`` ends, and both
    moves (into ``t`` and out of it) are within ``bridge_slack_heights + bridge_speed_heights_s x
    gap`` box heights, the sprint allowance of :mod:`tasks.link`."""

    def plausible(a: TrackInfo, b: TrackInfo) -> bool:
        return jump_excess(a, b, params.bridge_slack_heights, params.bridge_speed_heights_s) == 0.0

    me = infos[t]
    found = []
    for i, d in enumerate(identities):
        if d.kind != "player" or d.team != team:
            continue
        mine = [infos[u] for u in d.tracks if u in infos]
        if any(u.start < me.end - 1e-6 and me.start < u.end - 1e-6 for u in mine):
            continue  # seen meanwhile: not behind anyone
        before = [u for u in mine if me.start - params.bridge_gap_s <= u.end <= me.start + 1e-6]
        after = [u for u in mine if me.end - 1e-6 <= u.start <= me.end + params.bridge_gap_s]
        if not before or not after:
            continue
        last, first = max(before, key=lambda u: u.end), min(after, key=lambda u: u.start)
        if plausible(last, me) and plausible(me, first):
            found.append(i)
    return found[0] if len(found) == 1 else None


def jump_heights(a: TrackInfo, b: TrackInfo) -> float:
    height = max(1.0, (a.last_box[3] - a.last_box[1] + b.first_box[3] - b.first_box[1]) / 2)
    ca = np.array([(a.last_box[0] + a.last_box[2]) / 2, a.last_box[3]])
    cb = np.array([(b.first_box[0] + b.first_box[2]) / 2, b.first_box[3]])
    return float(np.linalg.norm(cb - ca)) / height
