"""The Kubernetes layer's tests and their API server (``tests.kube.apiserver``)."""
