"""`lamina` command line. Each area's commands live in their own module; they hold no logic.

`main` is the one error path: whatever a user can get wrong — a LaminaError, a usage error,
an environment that refuses a file operation — ends as one line on stderr and exit 2. Anything
else is a bug and keeps its traceback. Tests call `main` in-process, so they run this same path.
"""

from __future__ import annotations

import sys

import typer

from lamina.cli import data as _data  # noqa: F401,E402
from lamina.cli import eval as _eval  # noqa: F401,E402
from lamina.cli import identity as _identity  # noqa: F401,E402
from lamina.cli import keys as _keys  # noqa: F401,E402
from lamina.cli import methods as _methods  # noqa: F401,E402
from lamina.cli import registry as _registry  # noqa: F401,E402
from lamina.cli import rollout as _rollout  # noqa: F401,E402
from lamina.cli import serve as _serve  # noqa: F401,E402
from lamina.cli import stages as _stages  # noqa: F401,E402

# Importing a module registers its commands on `app`.
from lamina.cli import train as _train  # noqa: F401,E402
from lamina.cli.app import app
from lamina.errors import LaminaError, one_line

try:  # typer >= 0.20 carries its own copy of click
    from typer._click.exceptions import ClickException
except ImportError:  # pragma: no cover - older typer on plain click
    from click import ClickException


def _fail(message: str, code: int = 2) -> None:
    from rich.text import Text

    from lamina.console import console

    # A Text, not markup: a message quoting user input may hold brackets.
    console.print(Text.assemble(("error:", "bold red"), " ", one_line(message)), soft_wrap=True, highlight=False)
    sys.exit(code)


def main(argv: list[str] | None = None) -> None:
    from lamina.quiet import silence_third_party

    silence_third_party()
    try:
        code = _anchored(argv)
    except LaminaError as e:
        _record_failure(e)
        _fail(str(e))
    except ClickException as e:
        if type(e).__name__ == "NoArgsIsHelpError":
            e.show()  # a bare group prints its help, as before
            sys.exit(e.exit_code)
        ctx = getattr(e, "ctx", None)
        see = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
        _fail(f"{e.format_message()}{see}", e.exit_code)
    except typer.Abort:
        _fail("aborted", 1)
    except OSError as e:
        # The environment refused a file operation (a full disk, a read-only mount, a path
        # that is a file where a directory should be): name the path, not the stack.
        _record_failure(e)
        where = e.filename if e.filename is not None else None
        _fail(str(LaminaError(e.strerror or str(e), str(where) if where else None)))
    except Exception as e:
        _record_failure(e)
        raise
    sys.exit(code if isinstance(code, int) else 0)


def _anchored(argv: list[str] | None):
    """Run the command; then anchor the audit entry it wrote last in the tracking store
    (lamina.registry.audit_head), also when the command failed after writing one."""
    from lamina.governance import audit

    audit.LAST_WRITTEN.clear()
    # A command that never touches the registry does not import it just to anchor.
    tracking = sys.modules.get("lamina.registry.tracking")
    calls = tracking._client_for.cache_info() if tracking else None
    calls = calls.hits + calls.misses if calls else 0
    try:
        return app(args=argv, prog_name="lamina", standalone_mode=False)
    finally:
        try:
            if audit.LAST_WRITTEN:
                from lamina.registry import audit_head

                audit_head.after_command(calls)
        except Exception as e:  # the command's own outcome stands; verify will show the gap
            from lamina.console import console

            console.print(f"warning: the audit head was not anchored in the tracking store ({one_line(str(e))})",
                          markup=False, highlight=False, soft_wrap=True)


def _record_failure(e: BaseException) -> None:
    """Under torchrun: leave this rank's error for the launcher to report."""
    import os

    if "TORCHELASTIC_ERROR_FILE" in os.environ:
        from lamina.train.distributed import record_failure

        record_failure(e)
