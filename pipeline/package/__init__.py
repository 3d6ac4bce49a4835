"""Packaging a run for a mobile app (``deploy package``) and checking a package (``deploy package verify``).

``ort.py`` wraps ONNX Runtime's mobile tools (``.ort`` conversion, the reduced-build operator list,
NNAPI/CoreML usability); ``source.py`` reads a run directory; ``manifest.py`` writes the sealed
manifest, the preprocessing spec and the model metadata; ``integration.py`` the platform snippets;
``archive.py`` the reproducible zip or folder; ``build.py`` and ``verify.py`` the two commands.
"""
