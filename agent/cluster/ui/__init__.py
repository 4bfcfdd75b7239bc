"""The cluster dashboard served at ``/ui/``: static files in ``static/`` (plain HTML, CSS and
JavaScript, no build step, nothing loaded from elsewhere), served by
:mod:`agent.cluster.routes.ui`. The page reads the same API as the CLI, with the same token."""
