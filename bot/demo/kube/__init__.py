"""A Kubernetes API server on 127.0.0.1 (aiohttp in a thread): the demo's cluster and the tests'.

``apiserver.FakeApiServer`` serves the resource types of ``crds`` from the
thread-safe ``store.ObjectStore``; ``selectors`` holds label/field selectors
and the merge/JSON patches. The tests import it from here (``tests/kube/`` re-exports it).
"""
