"""The `filmroom` command-line program. Each sub-command lives in its own module; this one only composes."""

from __future__ import annotations

import typer
from rich.console import Console

from api.keys_cli import keys_app
from api.run_cli import demo, run
from api.serve_cli import dispatcher, serve
from api.synth_cli import synth
from api.train_cli import quantize_detector, train_detector
from api.up_cli import reconcile, serve_flows, up
from infra.version import code_version

app = typer.Typer(
    name="filmroom",
    help="filmroom turns sports and broadcast footage into a structured breakdown: "
    "who was on screen, where, for how long, on which team.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
console = Console()


@app.command("version")
def version_cmd() -> None:
    """Print filmroom's version."""
    console.print(f"filmroom {code_version()}")


app.command("synth")(synth)
app.command("run")(run)
app.command("demo")(demo)
app.command("train-detector")(train_detector)
app.command("quantize-detector")(quantize_detector)
app.command("up")(up)
app.command("serve-flows")(serve_flows)
app.command("reconcile")(reconcile)
app.command("serve")(serve)
app.command("dispatcher")(dispatcher)
app.add_typer(keys_app, name="keys")


if __name__ == "__main__":
    app()
