"""The production-readiness scorecard: the plan's criteria probed against the cluster.

``config.readiness_plan`` is the plan as data; here are the probes
(``probes`` and the ``*_probes`` modules), the scoring (``engine``), the
service that runs, stores and compares (``service``), the renderings
(``render``, ``chart``) and the wiring (``feature``, ``cli``).
"""
