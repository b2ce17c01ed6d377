"""kiln: bake, boot and verify Apache Mesos cluster images."""

__version__ = "0.1.0"
