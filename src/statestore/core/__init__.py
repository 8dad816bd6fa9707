"""The driver-free core: model, queries, protocol, errors, plugins. No driver imports."""
