"""kiln-node: the boot-time node configurator baked into kiln images.

Stdlib only, Python 3.9+. It turns a generic image into a standalone node, a master or
an agent from a JSON node spec: `kiln-node apply SPEC.json [--root DIR] [--dry-run]`.
"""

__version__ = "0.1.0"
