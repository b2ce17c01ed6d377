"""Vagrant: Vagrantfiles (render), boxes, clusters, readiness, capacity, addresses and the private
network namespaces VM tests use (netns)."""
