"""From a pod to the cause of its image-pull failure.

:mod:`~agent.pods.waiting` finds the containers kubelet holds waiting on an image,
:mod:`~agent.pods.events` counts their failures from the pod's Events,
:mod:`~agent.pods.secrets` checks the pull secrets kubelet would use (never printing them),
:mod:`~agent.pods.policy` sets ``imagePullPolicy`` against the images the node holds,
:mod:`~agent.pods.engine` puts them together per container (:mod:`~agent.pods.models`).
"""
