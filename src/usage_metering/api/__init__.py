"""The HTTP front end (thin): routes over the Metering library."""

from .app import create_app

__all__ = ["create_app"]
