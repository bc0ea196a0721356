"""`lamina` command line. Each area's commands live in their own module; they hold no logic."""

from __future__ import annotations

import sys

from lamina.cli import data as _data  # noqa: F401,E402
from lamina.cli import eval as _eval  # noqa: F401,E402
from lamina.cli import keys as _keys  # noqa: F401,E402
from lamina.cli import methods as _methods  # noqa: F401,E402
from lamina.cli import registry as _registry  # noqa: F401,E402
from lamina.cli import stages as _stages  # noqa: F401,E402

# Importing a module registers its commands on `app`.
from lamina.cli import train as _train  # noqa: F401,E402
from lamina.cli.app import app
from lamina.errors import LaminaError


def main() -> None:
    try:
        app()
    except LaminaError as e:
        from lamina.console import console

        _record_failure(e)
        console.print(f"[bold red]error:[/] {e}", markup=True, highlight=False, soft_wrap=True)
        sys.exit(2)
    except Exception as e:
        _record_failure(e)
        raise


def _record_failure(e: BaseException) -> None:
    """Under torchrun: leave this rank's error for the launcher to report."""
    import os

    if "TORCHELASTIC_ERROR_FILE" in os.environ:
        from lamina.train.distributed import record_failure

        record_failure(e)
