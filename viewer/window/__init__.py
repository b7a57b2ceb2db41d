"""Where the viewer draws and what the user touches: the GLFW window or headless EGL framebuffer
(``surfaces``, ``egl_context``), a hidden GL context for tests and tools (``gl_context``) and the
Dear PyGui control panel (``panel``)."""
