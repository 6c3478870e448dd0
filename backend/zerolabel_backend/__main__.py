"""``python -m zerolabel_backend``: the development server, as ``zerolabel serve``."""

from zerolabel_backend.cli import serve

if __name__ == "__main__":
    serve(prog_name="zerolabel-backend")
