"""The aggregator's HTTP API, one router per concern (``router`` in each module); the app
(:func:`agent.cluster.app.create_aggregator_app`) includes them, and ``/v1/pods…``'s from
:mod:`agent.cluster.pods.routes`."""
