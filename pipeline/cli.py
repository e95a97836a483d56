"""The ``marco`` command line: one entry point for every user-facing job.

Each subcommand lives beside the code it drives and is registered here; imports of
TensorFlow, TFX and Beam happen inside commands so that ``--help`` stays fast.
"""

from __future__ import annotations

import click

import components  # noqa: F401  (process set-up before TensorFlow)
from pipeline.commands import compile as compile_commands
from pipeline.commands import demo as demo_commands
from pipeline.commands import explain as explain_commands
from pipeline.commands import released as released_commands
from pipeline.commands import report as report_commands
from pipeline.commands import review as review_commands
from pipeline.commands import run as run_commands
from pipeline.commands import schema as schema_commands
from pipeline.commands import score as score_commands
from pipeline.commands import sources as sources_commands
from pipeline.commands import submit as submit_commands
from pipeline.commands import synth as synth_commands
from pipeline.commands import view as view_commands


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="marco-tfx")
def main() -> None:
    """MARCO: classify crystallization drop images with a TFX pipeline."""


main.add_command(compile_commands.compile_command)
main.add_command(submit_commands.submit_command)
main.add_command(demo_commands.demo)
main.add_command(report_commands.report)
main.add_command(run_commands.run)
main.add_command(sources_commands.sources)
main.add_command(synth_commands.synth)
main.add_command(schema_commands.schema)
main.add_command(score_commands.score)
main.add_command(score_commands.export_tflite)
main.add_command(released_commands.import_released)
main.add_command(view_commands.view)
main.add_command(explain_commands.explain)
main.add_command(review_commands.review)
