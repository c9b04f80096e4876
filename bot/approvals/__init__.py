"""Approval gates for critical Argo CD apps (docs/approvals.md).

``machine`` (pure states and decisions), ``application`` (pure view of an
Argo CD Application, the operation to write, progress), ``service`` (chat
side: request, react, redact, expire, cancel, list), ``runner`` (start once,
follow), ``transitions`` (compare-and-set + prompt edit + audit),
``render`` (messages), ``ports`` (what the cluster must offer), ``argocd``
(that, over ``KubeApi``), ``feature`` (wiring). Only ``argocd`` and
``feature`` import the Kubernetes layer's client.
"""
