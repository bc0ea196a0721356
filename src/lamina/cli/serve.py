"""`lamina serve`: the OpenAI-compatible server of registry references."""

from __future__ import annotations

from pathlib import Path

import typer

from lamina.cli.app import app


@app.command()
def serve(
    refs: list[str] = typer.Argument(None, help="NAME@ALIAS or NAME/VERSION; default: every alias set."),
    host: str = typer.Option(None, "--host", help="Address to listen on (default 127.0.0.1)."),
    port: int = typer.Option(None, "--port", help="Port to listen on."),
    device: str = typer.Option(None, "--device", help="cpu, cuda, cuda:1 (default: cuda if present)."),
    poll: float = typer.Option(None, "--poll", help="Seconds between alias reads (hot swap)."),
    max_batch: int = typer.Option(None, "--max-batch", help="Sequences decoded together per model."),
    max_tokens: int = typer.Option(None, "--max-tokens", help="Cap on a request's max_tokens."),
    guard: str = typer.Option(None, "--guard", help="PII in outputs: mask, block or off."),
    canaries: list[Path] = typer.Option(None, "--canaries", help="Canary JSONL files whose secrets are blocked."),
    no_auth: bool = typer.Option(False, "--no-auth", help="No API keys (loopback only)."),
    log_content: bool = typer.Option(False, "--log-content", help="Log prompts and outputs (PII-masked)."),
):
    """Serve registry versions through an OpenAI-compatible API; follows alias moves live."""
    import logging

    from lamina.console import console
    from lamina.governance import access, audit
    from lamina.recipe import ServeSpec
    from lamina.serve.server import Server

    flags = {"host": host, "port": port, "poll_s": poll, "max_batch": max_batch, "max_tokens": max_tokens,
             "guard": guard}
    spec = ServeSpec(**{k: v for k, v in flags.items() if v is not None}, auth=not no_auth,
                     log_content=log_content)
    user = access.require("serve")
    server = Server(refs or [], spec, device=device, canaries=canaries or [])
    server.bind()
    with console.status("verifying and loading " + ", ".join(server.refs)):
        server.load()
    audit.record("serve.start", user=user, refs=server.refs, host=spec.host, port=spec.port, auth=spec.auth)
    for ref in server.refs:
        console.print(f"{ref} -> {server.router.pick(ref)}", highlight=False)
    console.print(f"listening on http://{spec.host}:{spec.port}/v1 (Ctrl-C stops)", highlight=False)
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    logging.getLogger("lamina").addHandler(handler)
    logging.getLogger("lamina").setLevel(logging.INFO)  # swaps, refusals, guard trips; not the libraries' chatter
    server.run()
