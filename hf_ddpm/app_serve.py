"""Serving the web demo: `launch` runs Gradio's server until SIGINT (Ctrl+C) or SIGTERM stops it, or in the
background; the page's style sheet and the bound on an upload are set here, where the server starts."""

import contextlib
import signal
import threading
from collections.abc import Iterator

import gradio as gr

# Small images enlarged by the page stay sharp; the edited image, at the model's few pixels a side, fills its box.
CSS = "img { image-rendering: pixelated; } #edit-result img { width: 100%; height: 100%; object-fit: contain; }"
# What one visitor may leave on the server: uploads of at most this size (an image of the models' few dozen pixels a
# side takes a few kilobytes, the editor's canvas a few hundred); `build_demo` prunes Gradio's file cache.
MAX_UPLOAD_SIZE = "4mb"


def launch(
    demo: gr.Blocks,
    host: str = "127.0.0.1",
    port: int | None = 7860,
    share: bool = False,
    prevent_thread_lock: bool = False,
    **kwargs,
) -> str:
    """Serves `demo` and returns its local address: at once with `prevent_thread_lock=True` (the server runs in the
    background), else once SIGINT (Ctrl+C) or SIGTERM has stopped it and the server is closed. An upload may be at
    most `MAX_UPLOAD_SIZE` (Gradio's `max_file_size`, which `kwargs` may set otherwise).

    Until then those signals only set a flag that this function waits for. Gradio's own wait takes Ctrl+C as a
    KeyboardInterrupt, which strikes wherever the main thread is, its start-up included (a traceback instead of a
    clean stop, or a process that never exits), and it leaves SIGTERM to kill the process.

    Raises:
        `ValueError`: the port is in use.
    """
    if prevent_thread_lock:
        return _start(demo, host, port, share, **kwargs)
    with _stop_on_signals() as stop:
        try:
            url = _start(demo, host, port, share, **kwargs)
            while not stop.wait(timeout=0.5):
                pass
            print("Stopping: closing the server.", flush=True)
        finally:
            demo.close()
    return url


def _start(demo: gr.Blocks, host: str, port: int | None, share: bool, **kwargs) -> str:
    try:
        demo.launch(
            server_name=host,
            server_port=port,
            share=share,
            css=CSS,
            show_error=True,
            prevent_thread_lock=True,
            **{"max_file_size": MAX_UPLOAD_SIZE, **kwargs},
        )
    except OSError as error:
        if "Cannot find empty port" not in str(error):
            raise
        raise ValueError(
            f"--port {port} on {host} is in use by another program: stop it, or choose another --port."
        ) from None
    return demo.local_url


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[threading.Event]:
    """An event that SIGINT and SIGTERM set, in place of their handlers, until the block ends."""
    stop = threading.Event()
    previous = {number: signal.signal(number, lambda *_: stop.set()) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
