"""How splats reach the render window: the CUDA rasterizer through CUDA-GL interop (``cuda_view``),
OpenGL instanced quads (``gl_splats``), OpenGL compute-shader tiles (``gl_tiles``), the other
render modes (``gl_modes``) and the texture the image-producing backends show (``gl_display``)."""
