"""Reading the Kubernetes API as the caller: kubeconfig and context like kubectl, typed reads.

:mod:`agent.kube.config` loads the caller's configuration (``--kubeconfig``, ``KUBECONFIG``,
``~/.kube/config``, in-cluster); :mod:`agent.kube.client` reads pods, events, secrets, service
accounts and nodes, every failure one :class:`~agent.kube.client.KubeApiError` naming the verb,
the resource, the namespace and the server's own message.
"""
