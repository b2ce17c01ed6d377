"""Configuration: config.json with overlays (load), its schema messages (schema), cluster
shapes and node specs (shapes), targets and builders (targets), the component catalog (catalog)."""
