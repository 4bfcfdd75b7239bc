"""``python -m agent`` runs the pullcheck CLI."""

from agent.cli import main

main()
