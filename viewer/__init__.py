"""splatview's real-time viewer (GLFW + OpenGL window, Dear PyGui control panel)."""
