"""napari-cp2: the napari plugin for the cp2 engine (segment, correct, retrain, evaluate)."""

__all__: list[str] = []
