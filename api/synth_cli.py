"""`filmroom synth`: render synthetic match (or episode) clips with ground truth, and damaged variants."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from infra.synth import (
    DamageKind,
    EpisodeSpec,
    GameSpec,
    SynthClip,
    make_damaged,
    render_episode,
    render_game,
)
from infra.synth.spec import default_angles

console = Console()


def synth(
    out: Annotated[Path, typer.Option(help="Folder to write clips into.")] = Path("var/footage"),
    name: Annotated[str, typer.Option(help="File name stem.")] = "match",
    duration: Annotated[float, typer.Option(help="Seconds of footage.")] = 20.0,
    fps: Annotated[int, typer.Option(help="Frames per second.")] = 25,
    width: Annotated[int, typer.Option(help="Frame width (even).")] = 1280,
    height: Annotated[int, typer.Option(help="Frame height (even).")] = 720,
    players: Annotated[int, typer.Option(help="Players per team.")] = 11,
    referees: Annotated[int, typer.Option(help="Referees on the pitch.")] = 1,
    home: Annotated[str, typer.Option(help="Home jersey colour (name or #rrggbb).")] = "red",
    away: Annotated[str, typer.Option(help="Away jersey colour (name or #rrggbb).")] = "blue",
    camera_motion: Annotated[float, typer.Option(help="0 = static camera; 1 = broadcast pan/zoom.")] = 1.0,
    seed: Annotated[int, typer.Option(help="Same seed, same clip.")] = 0,
    angles: Annotated[int, typer.Option(help="Camera angles of the same match.")] = 1,
    offset: Annotated[float, typer.Option(help="Seconds between consecutive angles' starts.")] = 0.0,
    audio: Annotated[
        bool | None, typer.Option(help="Add stadium audio (default: only with 2+ angles).")
    ] = None,
    episode: Annotated[bool, typer.Option(help="Render an episode clip with real faces instead.")] = False,
    cast: Annotated[int, typer.Option(help="Cast size of an episode.")] = 4,
    damaged: Annotated[
        bool, typer.Option(help="Also write every damaged variant of the first clip.")
    ] = False,
) -> None:
    """Render deterministic synthetic footage with ground truth (Parquet) and a sidecar (JSON)."""
    try:
        if episode:
            clips = [
                render_episode(
                    EpisodeSpec(
                        name=name,
                        duration_s=duration,
                        fps=fps,
                        width=width,
                        height=height,
                        cast_size=cast,
                        seed=seed,
                    ),
                    out,
                )
            ]
        else:
            spec = GameSpec(
                name=name,
                duration_s=duration,
                fps=fps,
                width=width,
                height=height,
                players_per_team=players,
                referees=referees,
                home_color=home,
                away_color=away,
                camera_motion=camera_motion,
                seed=seed,
                angles=default_angles(angles, offset),
                audio=audio,
            )
            clips = render_game(spec, out)
    except ValueError as exc:
        console.print(f"[red]invalid options:[/red] {exc}")
        raise typer.Exit(2) from exc
    _report(clips)
    if damaged:
        table = Table("damaged variant", "file", "bytes")
        for kind in DamageKind:
            suffix = ".png" if kind is DamageKind.not_a_video else ".mp4"
            path = make_damaged(clips[0].video_path, kind, out / "damaged" / f"{name}_{kind.value}{suffix}")
            table.add_row(kind.value, str(path), str(path.stat().st_size))
        console.print(table)


def _report(clips: list[SynthClip]) -> None:
    table = Table("video", "ground truth", "frames", "render s")
    for clip in clips:
        table.add_row(
            str(clip.video_path),
            clip.ground_truth_path.name,
            str(clip.frame_count),
            f"{clip.render_seconds:.1f}",
        )
    console.print(table)
