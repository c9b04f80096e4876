"""Two replicas, one leader: a Kubernetes Lease decides who acts (issue 16).

``election`` is the pure state machine (acquire, renew, step down),
``lease`` speaks the Lease through the official client's CoordinationV1Api,
``elector`` runs the loop. Loaded only when ``ha.enabled``.
"""
