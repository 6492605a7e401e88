"""``mpiforge ft-master``: run the fault-tolerant all-reduce master in the foreground."""
from __future__ import annotations

import click


@click.command("ft-master")
@click.option("--host", default="127.0.0.1", show_default=True, envvar="MPIFORGE_FT_HOST",
              help="Address to bind; loopback unless told otherwise (0.0.0.0 for every interface).")
@click.option("--port", type=click.IntRange(0, 65535), default=48148, show_default=True, envvar="MPIFORGE_FT_PORT",
              help="TCP port (0: any free port, printed at start).")
@click.option("--secret-file", type=click.Path(exists=True, dir_okay=False), envvar="MPIFORGE_FT_SECRET_FILE",
              required=True, help="File holding the shared secret peers must know (e.g. `openssl rand -hex 32`).")
@click.option("--heartbeat-timeout", type=click.FloatRange(0.05), default=1.5, show_default=True,
              help="Seconds of silence after which a peer counts as dead.")
@click.option("--io-timeout", type=click.FloatRange(0.1), default=5.0, show_default=True,
              help="Seconds a client may take to authenticate, or stall in the middle of a frame.")
def ft_master(host: str, port: int, secret_file: str, heartbeat_timeout: float, io_timeout: float) -> None:
    """Run the master of a fault-tolerant all-reduce group until interrupted.

    \b
      mpiforge ft-master --port 48148 --secret-file ~/.ft-secret
      peer = Peer(("127.0.0.1", 48148), secret_file="~/.ft-secret"); peer.connect()

    Peers join at any time and are admitted at the next update_topology(); a peer that dies
    makes every in-flight collective fail on every survivor, who retry after update_topology().
    """
    from .auth import load_secret
    from .master import Master

    try:
        secret = load_secret(secret_file=secret_file)
        master = Master(secret, host=host, port=port, heartbeat_timeout=heartbeat_timeout,
                        io_timeout=io_timeout).start()
    except (OSError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    bound_host, bound_port = master.address
    click.echo(f"ft-master listening on {bound_host}:{bound_port}", err=False)
    try:
        master.serve_forever()
    except KeyboardInterrupt:
        pass
