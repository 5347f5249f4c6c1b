from tests.unit.cluster.conftest import fake_cluster  # noqa: F401  (the served temp cluster)
