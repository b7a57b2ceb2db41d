"""Moving the viewer's camera: keys, mouse drags and snapping to input cameras (``controls``)."""
