"""Serving: the exported SavedModel (module.py), its signatures, one registry entry
each (signatures.py), the versioned export (export.py) and the generated signature
tables of the READMEs (docs.py)."""
