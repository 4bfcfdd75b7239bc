"""Pods stuck on image pulls, diagnosed from the aggregator: a pull test of each failing
container's image on the pod's own node with the pod's own pull secrets (read here, never by the
agents, never logged, cached or returned), on demand (``POST /v1/pods/{namespace}/{name}/pulltest``)
or automatically (a watch of pods, off by default), published as Events, metrics and
``GET /v1/pods``."""
