"""cli/flags.py: a library ParameterError reaches the user worded with the command's flags."""
import typer
from typer.testing import CliRunner

from tunelab.cli.flags import flag_names, speak_flags
from tunelab.errors import ParameterError, TunelabError


def test_the_library_names_parameters_and_the_cli_names_flags():
    e = ParameterError("{batch_size} must be >= 1; or lower {limit}", "batch_size", "limit")
    assert str(e) == "batch_size must be >= 1; or lower limit" and isinstance(e, TunelabError)
    assert e.worded({"batch_size": "--batch-size"}) == "--batch-size must be >= 1; or lower limit"


def test_commands_are_wrapped_with_their_own_flag_names():
    app = typer.Typer()

    @app.command()
    def run(model: str = typer.Argument(...), batch_size: int = typer.Option(8, "--batch-size", "-b"),
            train_on: str = typer.Option("completion"), key: str = typer.Option("x", "-k")):
        raise ParameterError("{batch_size} and {train_on} and {key} and {model} and {max_toxicity}",
                             "batch_size", "train_on", "key", "model", "max_toxicity")

    assert flag_names(run) == {"model": "MODEL", "batch_size": "--batch-size", "train_on": "--train-on", "key": "-k"}
    speak_flags(app)
    res = CliRunner().invoke(app, ["m"])
    assert isinstance(res.exception, TunelabError) and not isinstance(res.exception, ParameterError)
    # a library name that is not a flag of this command (a config key) stays as it is
    assert str(res.exception) == "--batch-size and --train-on and -k and MODEL and max_toxicity"


def test_the_real_app_wraps_every_command():
    from tunelab.cli import app

    def commands(a):
        yield from a.registered_commands
        for g in a.registered_groups:
            yield from commands(g.typer_instance)

    assert all(hasattr(c.callback, "__wrapped__") for c in commands(app))
